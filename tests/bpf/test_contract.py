"""C and Python agree on every shared value: the compiler itself reports them.

A probe program, generated from spagate/gate/kernel/abi.py, includes the gate's headers and
writes each value (consts.h macros, reasons.h enum values, sizeof and offsetof of every
structs.h layout) into an array map; BPF_PROG_TEST_RUN runs it once and the test compares the
map with abi.py. Plus: the maps bcc created match MAP_SPECS, and the maps API's arguments.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Network

import pytest

from spagate.gate.kernel import abi, bpfsys
from spagate.gate.kernel.build import Program
from spagate.net import addr16, addr_from16


def _probes() -> list[tuple[str, str, int]]:
    """(what, C expression, the value abi.py says)."""
    out = [(f"macro {name}", f"(__u64)({name})", value) for name, value in abi.CONSTS.items()]
    out += [(f"reason {r.name}", f"REASON_{r.name}", r.value) for r in abi.KernelReason]
    out.append(("REASON_COUNT", "REASON_COUNT", len(abi.KernelReason)))
    for layout in abi.LAYOUTS:
        out.append((f"sizeof {layout.c_name}", f"sizeof(struct {layout.c_name})", layout.size))
        for field in layout.offsets:
            expr = f"__builtin_offsetof(struct {layout.c_name}, {field})"
            out.append((f"offsetof {layout.c_name}.{field}", expr, layout.offset(field)))
    return out


PROBES = _probes()
PROGRAM = f"""
#include <uapi/linux/bpf.h>
#include "consts.h"
#include "reasons.h"
#include "structs.h"

BPF_ARRAY(out, __u64, {len(PROBES)});

static __always_inline void put(__u32 i, __u64 v)
{{
	__u64 *slot = out.lookup(&i);

	if (slot)
		*slot = v;
}}

int probe(struct xdp_md *ctx)
{{
{"".join(f"	put({i}, {expr});{chr(10)}" for i, (_, expr, _) in enumerate(PROBES))}
	return XDP_PASS;
}}
"""


@pytest.fixture(scope="module")
def reported() -> dict[str, int]:
    with Program(PROGRAM) as prog:
        assert bpfsys.prog_test_run(prog.fd("probe"), bytes(64)).action == abi.XdpAction.PASS
        fd = prog.map_fd("out")
        return {
            what: abi.U64.unpack(bpfsys.lookup(fd, abi.U32.pack(i), 8))[0]
            for i, (what, _, _) in enumerate(PROBES)
        }


@pytest.mark.parametrize(
    "what, expected", [(w, v) for w, _, v in PROBES], ids=[w for w, _, _ in PROBES]
)
def test_the_compiler_reports_what_abi_py_says(reported, what, expected):
    assert reported[what] == expected


def test_every_struct_of_structs_h_is_mirrored():
    import re

    text = "".join((Program.include_dir() / h).read_text() for h in ("structs.h", "spa_keys.h"))
    # Kernel-only: the tail call's per-CPU hand-over and the payload copy the MAC runs over.
    # and the closed disguise's checksum buffer.
    kernel_only = {"spa_scratch", "spa_wire", "reply_buf"}
    in_c = set(re.findall(r"^struct (\w+) \{", text, re.M)) - kernel_only
    assert in_c == {layout.c_name for layout in abi.LAYOUTS}


def test_every_macro_of_consts_h_is_mirrored():
    import re

    text = (Program.include_dir() / "consts.h").read_text()
    assert set(re.findall(r"^#define (\w+) ", text, re.M)) - {"SPAGATE_CONSTS_H"} == set(abi.CONSTS)


def test_map_layouts_match_what_bcc_created(gate):
    for name, spec in abi.MAP_SPECS.items():
        info = bpfsys.map_info(gate.maps.fd(name))
        assert (info.type, info.key_size, info.value_size, info.flags) == (
            spec.type,
            spec.key_size,
            spec.value_size,
            spec.flags,
        ), name
    assert bpfsys.map_info(gate.internal["spa_events"]).type == abi.MapType.RINGBUF


def test_address_forms():
    assert addr16("192.0.2.1") == addr16("::ffff:192.0.2.1") == addr16(IPv4Address("192.0.2.1"))
    assert addr_from16(addr16("::ffff:192.0.2.1")) == IPv4Address("192.0.2.1")
    with pytest.raises(ValueError):
        addr16("not-an-ip")


def test_maps_argument_errors(fresh):
    m = fresh.maps
    with pytest.raises(ValueError, match="needs a protocol"):
        m.allow("192.0.2.1", 1, None, 22)
    with pytest.raises(ValueError, match="protocol"):
        m.allow("192.0.2.1", 1, "icmp")
    with pytest.raises(ValueError, match="port"):
        m.allow("192.0.2.1", 1, "tcp", 70000)
    with pytest.raises(ValueError, match="16 bytes"):
        m.replay_remember(b"short", 1)
    with pytest.raises(ValueError):
        m.set_static(["192.0.2.1/24"])  # host bits set
    m.set_static(["192.0.2.0/24", IPv6Network("2001:db8::/32"), "10.0.0.1/32"])
    assert m.static() == [
        IPv4Network("10.0.0.1/32"),
        IPv4Network("192.0.2.0/24"),
        IPv6Network("2001:db8::/32"),
    ]
