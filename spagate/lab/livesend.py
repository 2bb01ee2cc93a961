"""A line-rate packet source for the floods of benches and tests: XDP live frames into a veth.

A small XDP program (bcc) rewrites the IPv4 source of a template frame (random within a mask,
checksums fixed incrementally) and bpf_redirect()s it to the sender's veth; the kernel runs it
`count` times with BPF_PROG_TEST_RUN and BPF_F_TEST_XDP_LIVE_FRAMES (kernel 5.18+), so each
frame reaches the peer (the gate's eth0) as an xdp_frame, the way a NIC driver hands it over:
no socket, no skb on the sending side. The run is bounded by `count` and stops by itself.

    with LiveSender(frame(...), ifindex, src_base="198.18.0.0", src_mask=0x1FFFF) as s:
        s.run(2_000_000, netns="/run/netns/x", cpu=0)   # blocks; thread-safe wrt. the GIL
"""

from __future__ import annotations

import os
from ipaddress import IPv4Address

from spagate.gate.kernel import abi, bpfsys
from spagate.gate.kernel.build import Program
from spagate.gate.kernel.link import in_netns
from spagate.lab import packets

udp = packets.udp

PROGRAM = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>

BPF_PERCPU_ARRAY(sent, u64, 1);

static __always_inline u16 fold(u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (u16)s;
}

/* RFC 1624: HC' = ~(~HC + ~m + m') for the two 16-bit halves of a 32-bit field. */
static __always_inline u16 csum_replace4(u16 check, u32 from, u32 to)
{
	u32 s = (u16)~check;
	s += (u16)~(from & 0xffff) + (u16)~(from >> 16);
	s += (to & 0xffff) + (to >> 16);
	return ~fold(s);
}

int flood(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > end)
		return XDP_ABORTED;
	u32 old = ip->saddr;
	u32 host = SRC_BASE | (bpf_get_prandom_u32() & SRC_MASK);
	u32 new = bpf_htonl(host);
	ip->saddr = new;
	ip->check = csum_replace4(ip->check, old, new);
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = (void *)(ip + 1);
		if ((void *)(tcp + 1) > end)
			return XDP_ABORTED;
		tcp->check = csum_replace4(tcp->check, old, new);
	} else if (JUNK && ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = (void *)(ip + 1);
		u32 *word = (void *)(udp + 1);
		if ((void *)(word + 1) > end)
			return XDP_ABORTED;
		*word = bpf_get_prandom_u32(); /* junk stays junk (frames are recycled) */
	}
	u32 zero = 0;
	u64 *n = sent.lookup(&zero);
	if (n)
		*n += 1;
	return bpf_redirect(OUT_IFINDEX, 0);
}
"""


def frame(
    src_mac: bytes, dst_mac: bytes, src: str, dst: str, proto: int, l4: bytes, l4_csum: bool = True
) -> bytes:
    """Ethernet + IPv4 (DF) + l4 (TCP/UDP header with payload), checksums filled in."""
    ip = packets.ipv4(src, dst, proto, l4, ident=0, df=True, l4_checksum=l4_csum)
    return packets.eth(ip, dst_mac=dst_mac, src_mac=src_mac)


def tcp_syn(sport: int, dport: int) -> bytes:
    return packets.tcp(sport, dport, packets.SYN, seq=12345, window=64240)


class LiveSender:
    """The sender program for one template frame; run() floods `count` copies.

    junk: a UDP payload's first word is randomised per frame (a flood of distinct junk);
    junk=False sends the template's payload unchanged (replays of one valid SPA packet)."""

    def __init__(
        self, template: bytes, out_ifindex: int, src_base: str, src_mask: int, junk: bool = True
    ):
        self.template = template
        base = int(IPv4Address(src_base))
        self._prog = Program(
            PROGRAM,
            [
                f"-DSRC_BASE={base}U",
                f"-DSRC_MASK={src_mask}U",
                f"-DOUT_IFINDEX={out_ifindex}",
                f"-DJUNK={int(junk)}",
            ],
        )
        self.fd = self._prog.fd("flood")

    def run(self, count: int, netns: str | None = None, cpu: int | None = None,
            batch: int = 64) -> int:  # fmt: skip
        """Send count frames (blocks). Returns the program's verdict of the last frame."""
        mask = os.sched_getaffinity(0)
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})  # this thread only
        try:
            with in_netns(netns):
                return bpfsys.prog_test_run_live(self.fd, self.template, count, batch)
        finally:
            os.sched_setaffinity(0, mask)

    def sent(self) -> int:
        size = bpfsys.value_buffer_size(abi.MapType.PERCPU_ARRAY, 8)
        raw = bpfsys.lookup(self._prog.map_fd("sent"), abi.U32.pack(0), size) or b""
        return sum(int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw), 8))

    def close(self) -> None:
        if self._prog is not None:
            self._prog.close()
            self._prog = None

    def __enter__(self) -> LiveSender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
