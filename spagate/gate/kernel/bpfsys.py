"""Thin ctypes wrapper of libbpf.so.1: map, program and link syscalls without bcc.

Its one concern is the bpf() system call; it knows no spagate map by name. Every call raises
OSError(errno, "<call>: <strerror>") on failure. Keys and values are bytes-like objects
(bytes, bytearray, ctypes structures); lookups return bytes. Never imports bcc.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
import struct
from dataclasses import dataclass
from functools import cache

from spagate.gate.kernel.abi import PERCPU_TYPES, PROG_TYPE_XDP, XdpAction

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
BPF_XDP = 37  # enum bpf_attach_type
BPF_LINK_TYPE_XDP = 6  # enum bpf_link_type


class _TestRunOpts(ct.Structure):
    _fields_ = [
        ("sz", ct.c_size_t),
        ("data_in", ct.c_void_p),
        ("data_out", ct.c_void_p),
        ("data_size_in", ct.c_uint32),
        ("data_size_out", ct.c_uint32),
        ("ctx_in", ct.c_void_p),
        ("ctx_out", ct.c_void_p),
        ("ctx_size_in", ct.c_uint32),
        ("ctx_size_out", ct.c_uint32),
        ("retval", ct.c_uint32),
        ("repeat", ct.c_int),
        ("duration", ct.c_uint32),
        ("flags", ct.c_uint32),
        ("cpu", ct.c_uint32),
        ("batch_size", ct.c_uint32),
    ]


class _MapCreateOpts(ct.Structure):
    _fields_ = [
        ("sz", ct.c_size_t),
        ("btf_fd", ct.c_uint32),
        ("btf_key_type_id", ct.c_uint32),
        ("btf_value_type_id", ct.c_uint32),
        ("btf_vmlinux_value_type_id", ct.c_uint32),
        ("inner_map_fd", ct.c_uint32),
        ("map_flags", ct.c_uint32),
        ("map_extra", ct.c_uint64),
        ("numa_node", ct.c_uint32),
        ("map_ifindex", ct.c_uint32),
    ]


class _LinkCreateOpts(ct.Structure):
    # struct bpf_link_create_opts: sz, flags, then a union this program never uses.
    _fields_ = [("sz", ct.c_size_t), ("flags", ct.c_uint32), ("_rest", ct.c_uint64 * 8)]


class _LinkUpdateOpts(ct.Structure):
    _fields_ = [
        ("sz", ct.c_size_t),
        ("flags", ct.c_uint32),
        ("old_prog_fd", ct.c_uint32),
        ("old_map_fd", ct.c_uint32),
    ]


class _BatchOpts(ct.Structure):
    _fields_ = [("sz", ct.c_size_t), ("elem_flags", ct.c_uint64), ("flags", ct.c_uint64)]


class _MapInfo(ct.Structure):
    # Leading fields of struct bpf_map_info; the buffer passed is larger (_INFO_BUF).
    _fields_ = [
        ("type", ct.c_uint32),
        ("id", ct.c_uint32),
        ("key_size", ct.c_uint32),
        ("value_size", ct.c_uint32),
        ("max_entries", ct.c_uint32),
        ("map_flags", ct.c_uint32),
        ("name", ct.c_char * 16),
    ]


class _XdpMd(ct.Structure):
    _fields_ = [
        ("data", ct.c_uint32),
        ("data_end", ct.c_uint32),
        ("data_meta", ct.c_uint32),
        ("ingress_ifindex", ct.c_uint32),
        ("rx_queue_index", ct.c_uint32),
        ("egress_ifindex", ct.c_uint32),
    ]


@cache
def _lib() -> ct.CDLL:
    try:
        lib = ct.CDLL("libbpf.so.1", use_errno=True)
    except OSError as e:
        raise OSError(errno.ENOENT, f"libbpf.so.1 not found (install libbpf1): {e}") from None
    sig = {
        "bpf_obj_get": (ct.c_int, [ct.c_char_p]),
        "bpf_obj_pin": (ct.c_int, [ct.c_int, ct.c_char_p]),
        "bpf_map_lookup_elem": (ct.c_int, [ct.c_int, ct.c_void_p, ct.c_void_p]),
        "bpf_map_update_elem": (ct.c_int, [ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_uint64]),
        "bpf_map_delete_elem": (ct.c_int, [ct.c_int, ct.c_void_p]),
        "bpf_map_get_next_key": (ct.c_int, [ct.c_int, ct.c_void_p, ct.c_void_p]),
        "bpf_map_update_batch": (
            ct.c_int,
            [ct.c_int, ct.c_void_p, ct.c_void_p, ct.POINTER(ct.c_uint32), ct.c_void_p],
        ),
        "bpf_obj_get_info_by_fd": (
            ct.c_int,
            [ct.c_int, ct.c_void_p, ct.POINTER(ct.c_uint32)],
        ),
        "bpf_map_create": (
            ct.c_int,
            [ct.c_int, ct.c_char_p, ct.c_uint32, ct.c_uint32, ct.c_uint32, ct.c_void_p],
        ),
        "bpf_prog_load": (
            ct.c_int,
            [ct.c_int, ct.c_char_p, ct.c_char_p, ct.c_void_p, ct.c_size_t, ct.c_void_p],
        ),
        "bpf_prog_test_run_opts": (ct.c_int, [ct.c_int, ct.POINTER(_TestRunOpts)]),
        "bpf_map_lookup_batch": (
            ct.c_int,
            [
                ct.c_int,
                ct.c_void_p,
                ct.c_void_p,
                ct.c_void_p,
                ct.c_void_p,
                ct.POINTER(ct.c_uint32),
                ct.c_void_p,
            ],
        ),  # fmt: skip
        "bpf_map_delete_batch": (
            ct.c_int,
            [ct.c_int, ct.c_void_p, ct.POINTER(ct.c_uint32), ct.c_void_p],
        ),
        "bpf_link_create": (ct.c_int, [ct.c_int, ct.c_int, ct.c_int, ct.c_void_p]),
        "bpf_link_update": (ct.c_int, [ct.c_int, ct.c_int, ct.c_void_p]),
        "bpf_link_detach": (ct.c_int, [ct.c_int]),
        "bpf_prog_get_fd_by_id": (ct.c_int, [ct.c_uint32]),
        "bpf_link_get_fd_by_id": (ct.c_int, [ct.c_uint32]),
        "bpf_link_get_next_id": (ct.c_int, [ct.c_uint32, ct.POINTER(ct.c_uint32)]),
        "libbpf_num_possible_cpus": (ct.c_int, []),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def _check(ret: int, what: str) -> int:
    """libbpf 1.x returns -errno (and sets errno) on failure."""
    if ret < 0:
        err = -ret if ret < -1 else (ct.get_errno() or errno.EIO)
        name = errno.errorcode.get(err, str(err))
        raise OSError(err, f"{what}: {name} ({os.strerror(err)})")
    return ret


def _buf(obj) -> ct.Array | ct.Structure:
    """A ctypes object whose address libbpf can read (copying immutable bytes)."""
    if isinstance(obj, ct.Structure | ct.Array):
        return obj
    if isinstance(obj, bytearray):
        return (ct.c_char * len(obj)).from_buffer(obj)
    return ct.create_string_buffer(bytes(obj), len(obj))


def _ptr(obj):
    """An argument for a `const void *` that libbpf only reads: bytes go as they are (ctypes
    passes their buffer, no copy: half the cost of a bpf call on the daemon's hot path)."""
    return obj if isinstance(obj, bytes) else ct.byref(_buf(obj))


def obj_get(path: str | os.PathLike) -> int:
    """Open a pinned object; returns a new fd (caller closes)."""
    return _check(_lib().bpf_obj_get(os.fsencode(path)), f"bpf_obj_get {path}")


def obj_pin(fd: int, path: str | os.PathLike) -> None:
    _check(_lib().bpf_obj_pin(fd, os.fsencode(path)), f"bpf_obj_pin {path}")


@dataclass(frozen=True)
class MapInfo:
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


def map_info(fd: int) -> MapInfo:
    buf = ct.create_string_buffer(256)  # bigger than any struct bpf_map_info
    size = ct.c_uint32(len(buf))
    _check(_lib().bpf_obj_get_info_by_fd(fd, buf, ct.byref(size)), "bpf_obj_get_info_by_fd")
    i = _MapInfo.from_buffer(buf)
    return MapInfo(
        i.type, i.id, i.key_size, i.value_size, i.max_entries, i.map_flags, i.name.decode()
    )


def map_create(
    map_type: int, name: str, key_size: int, value_size: int, max_entries: int, flags: int = 0
) -> int:
    opts = _MapCreateOpts(sz=ct.sizeof(_MapCreateOpts), map_flags=flags)
    return _check(
        _lib().bpf_map_create(
            map_type, name.encode()[:15], key_size, value_size, max_entries, ct.byref(opts)
        ),
        f"bpf_map_create {name}",
    )


@cache
def num_possible_cpus() -> int:
    return _check(_lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


def value_buffer_size(map_type: int, value_size: int) -> int:
    """Bytes a lookup writes: per-CPU maps return one 8-byte-aligned slot per possible CPU."""
    if map_type in PERCPU_TYPES:
        return ((value_size + 7) & ~7) * num_possible_cpus()
    return value_size


def lookup(fd: int, key, value_size: int) -> bytes | None:
    """Value bytes for key (value_size: see value_buffer_size), None when absent."""
    out = ct.create_string_buffer(value_size)
    ret = _lib().bpf_map_lookup_elem(fd, _ptr(key), out)
    if ret < 0 and -ret == errno.ENOENT:
        return None
    _check(ret, "bpf_map_lookup_elem")
    return out.raw


def update(fd: int, key, value, flags: int = BPF_ANY) -> None:
    _check(
        _lib().bpf_map_update_elem(fd, _ptr(key), _ptr(value), flags),
        "bpf_map_update_elem",
    )


def delete(fd: int, key) -> bool:
    """True if the key was there."""
    ret = _lib().bpf_map_delete_elem(fd, _ptr(key))
    if ret < 0 and -ret == errno.ENOENT:
        return False
    _check(ret, "bpf_map_delete_elem")
    return True


def keys(fd: int, key_size: int):
    """Iterate over the keys (as bytes). Entries deleted meanwhile may restart the walk."""
    lib = _lib()
    cur = ct.create_string_buffer(key_size)
    nxt = ct.create_string_buffer(key_size)
    prev = None
    while True:
        ret = lib.bpf_map_get_next_key(fd, prev, nxt)
        if ret < 0 and -ret == errno.ENOENT:
            return
        _check(ret, "bpf_map_get_next_key")
        yield nxt.raw
        ct.memmove(cur, nxt, key_size)
        prev = cur


def update_batch(fd: int, keys: bytes, values: bytes, count: int, flags: int = BPF_ANY) -> int:
    """Write count packed keys/values in one syscall (hash and LRU maps); returns count done."""
    n = ct.c_uint32(count)
    opts = _BatchOpts(sz=ct.sizeof(_BatchOpts), elem_flags=flags)
    kb, vb = _buf(keys), _buf(values)
    _check(
        _lib().bpf_map_update_batch(fd, ct.byref(kb), ct.byref(vb), ct.byref(n), ct.byref(opts)),
        "bpf_map_update_batch",
    )
    return n.value


def items(fd: int, key_size: int, value_size: int, chunk: int = 4096):
    """Every (key, value) of a hash or LRU map, chunk entries per syscall (bpf_map_lookup_batch;
    entries that come and go during the walk may be missed or seen once more)."""
    lib = _lib()
    token_size = max(key_size, 8)  # the batch token of hash maps is a bucket index
    tokens = [ct.create_string_buffer(token_size), ct.create_string_buffer(token_size)]
    kb = ct.create_string_buffer(key_size * chunk)
    vb = ct.create_string_buffer(value_size * chunk)
    opts = _BatchOpts(sz=ct.sizeof(_BatchOpts))
    first = True
    while True:
        n = ct.c_uint32(chunk)
        in_tok = None if first else ct.byref(tokens[0])
        ret = lib.bpf_map_lookup_batch(fd, in_tok, ct.byref(tokens[1]), kb, vb, ct.byref(n),
                                       ct.byref(opts))  # fmt: skip
        done = ret < 0 and -ret == errno.ENOENT
        if not done:
            _check(ret, "bpf_map_lookup_batch")
        keys, values = kb.raw, vb.raw
        for i in range(n.value):
            yield (keys[i * key_size : (i + 1) * key_size],
                   values[i * value_size : (i + 1) * value_size])  # fmt: skip
        if done:
            return
        tokens.reverse()
        first = False


def delete_batch(fd: int, keys: bytes, count: int) -> int:
    """Delete count packed keys in one syscall (hash and LRU maps); returns count done. A key
    that is not there fails the call with ENOENT after the ones before it were deleted."""
    n = ct.c_uint32(count)
    opts = _BatchOpts(sz=ct.sizeof(_BatchOpts))
    kb = _buf(keys)
    _check(
        _lib().bpf_map_delete_batch(fd, ct.byref(kb), ct.byref(n), ct.byref(opts)),
        "bpf_map_delete_batch",
    )
    return n.value


# --- programs and links ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProgInfo:
    type: int
    id: int
    name: str


def prog_info(fd: int) -> ProgInfo:
    buf = ct.create_string_buffer(256)  # struct bpf_prog_info: type, id, ..., name at 64
    size = ct.c_uint32(len(buf))
    _check(_lib().bpf_obj_get_info_by_fd(fd, buf, ct.byref(size)), "bpf_obj_get_info_by_fd")
    ptype, pid = struct.unpack_from("=II", buf.raw, 0)
    name = buf.raw[64:80].split(b"\0", 1)[0].decode(errors="replace")
    return ProgInfo(ptype, pid, name)


def prog_get_fd_by_id(prog_id: int) -> int:
    """A new fd of the program with this id (needs CAP_SYS_ADMIN)."""
    return _check(_lib().bpf_prog_get_fd_by_id(prog_id), f"bpf_prog_get_fd_by_id {prog_id}")


@dataclass(frozen=True)
class LinkInfo:
    type: int
    id: int
    prog_id: int
    ifindex: int  # XDP links: 0 once detached (interface gone, or BPF_LINK_DETACH)


def link_info(fd: int) -> LinkInfo:
    # struct bpf_link_info: type, id, prog_id, then an 8-aligned union (xdp.ifindex at 16).
    buf = ct.create_string_buffer(128)
    size = ct.c_uint32(len(buf))
    _check(_lib().bpf_obj_get_info_by_fd(fd, buf, ct.byref(size)), "bpf_obj_get_info_by_fd")
    ltype, lid, prog_id = struct.unpack_from("=III", buf.raw, 0)
    ifindex = struct.unpack_from("=I", buf.raw, 16)[0] if ltype == BPF_LINK_TYPE_XDP else 0
    return LinkInfo(ltype, lid, prog_id, ifindex)


def xdp_link_create(prog_fd: int, ifindex: int, xdp_flags: int) -> int:
    """BPF_LINK_CREATE for XDP: the program stays on ifindex as long as the link lives (an fd
    or a pin); nobody can replace it through netlink meanwhile. Returns the link fd."""
    opts = _LinkCreateOpts(sz=ct.sizeof(_LinkCreateOpts), flags=xdp_flags)
    return _check(
        _lib().bpf_link_create(prog_fd, ifindex, BPF_XDP, ct.byref(opts)), "bpf_link_create"
    )


def link_update(link_fd: int, prog_fd: int) -> None:
    """Swap the link's program atomically (no moment without a program)."""
    opts = _LinkUpdateOpts(sz=ct.sizeof(_LinkUpdateOpts))
    _check(_lib().bpf_link_update(link_fd, prog_fd, ct.byref(opts)), "bpf_link_update")


def link_ids():
    """Every BPF link id in the system (needs CAP_SYS_ADMIN)."""
    cur, nxt = ct.c_uint32(0), ct.c_uint32(0)
    while _lib().bpf_link_get_next_id(cur.value, ct.byref(nxt)) == 0:
        yield nxt.value
        cur.value = nxt.value


def link_get_fd_by_id(link_id: int) -> int:
    return _check(_lib().bpf_link_get_fd_by_id(link_id), f"bpf_link_get_fd_by_id {link_id}")


def link_detach(link_fd: int) -> None:
    """Detach a link's program from its interface now (BPF_LINK_DETACH)."""
    _check(_lib().bpf_link_detach(link_fd), "bpf_link_detach")


def prog_load_xdp_return(action: XdpAction, name: str = "xdp_const") -> int:
    """Load `return action;` as an XDP program (the benchmark's empty baseline); returns fd."""
    insns = (ct.c_uint64 * 2)(
        0xB7 | (action << 32),  # BPF_ALU64 | BPF_MOV | BPF_K: r0 = action
        0x95,  # BPF_JMP | BPF_EXIT
    )
    return _check(
        _lib().bpf_prog_load(PROG_TYPE_XDP, name.encode(), b"GPL", insns, 2, None),
        "bpf_prog_load",
    )


@dataclass(frozen=True)
class TestRun:
    __test__ = False  # not a pytest test class

    retval: int
    duration_ns: int  # average per repetition
    data_out: bytes

    @property
    def action(self) -> XdpAction:
        return XdpAction(self.retval)


def prog_test_run(prog_fd: int, data: bytes, repeat: int = 1, ingress_ifindex: int = 0) -> TestRun:
    """Run an XDP program on one packet with BPF_PROG_TEST_RUN (no device, current netns)."""
    din = ct.create_string_buffer(bytes(data), len(data))
    dout = ct.create_string_buffer(len(data) + 512)
    opts = _TestRunOpts(sz=ct.sizeof(_TestRunOpts))
    opts.data_in = ct.cast(din, ct.c_void_p)
    opts.data_size_in = len(data)
    opts.data_out = ct.cast(dout, ct.c_void_p)
    opts.data_size_out = len(dout)
    opts.repeat = repeat
    if ingress_ifindex:
        md = _XdpMd(data=0, data_end=len(data), ingress_ifindex=ingress_ifindex)
        opts.ctx_in = ct.cast(ct.pointer(md), ct.c_void_p)
        opts.ctx_size_in = ct.sizeof(md)
    _check(_lib().bpf_prog_test_run_opts(prog_fd, ct.byref(opts)), "bpf_prog_test_run_opts")
    return TestRun(opts.retval, opts.duration, dout.raw[: opts.data_size_out])


def prog_test_run_live(prog_fd: int, frame: bytes, count: int, batch_size: int = 64) -> int:
    """Run an XDP program `count` times on live frames (BPF_F_TEST_XDP_LIVE_FRAMES, kernel
    5.18+): a frame the program redirects leaves as a real xdp_frame. Blocks; releases the
    GIL. Returns the program's verdict of the last frame."""
    din = ct.create_string_buffer(bytes(frame), len(frame))
    opts = _TestRunOpts(sz=ct.sizeof(_TestRunOpts))
    opts.data_in = ct.cast(din, ct.c_void_p)
    opts.data_size_in = len(frame)
    opts.repeat = count
    opts.flags = BPF_F_TEST_XDP_LIVE_FRAMES
    opts.batch_size = batch_size
    ret = _lib().bpf_prog_test_run_opts(prog_fd, ct.byref(opts))
    _check(ret, "bpf_prog_test_run_opts (live frames)")
    return opts.retval
