"""A line-rate packet source for the floods of benches and tests: XDP live frames into a veth.

A small XDP program (bcc) rewrites the IPv4 source of a template frame (random within a mask,
checksums fixed incrementally) and bpf_redirect()s it to the sender's veth; the kernel runs it
`count` times with BPF_PROG_TEST_RUN and BPF_F_TEST_XDP_LIVE_FRAMES (kernel 5.18+), so each
frame reaches the peer (the gate's eth0) as an xdp_frame, the way a NIC driver hands it over:
no socket, no skb on the sending side. The run is bounded by `count` and stops by itself.

    with LiveSender(frame(...), ifindex, src_base="198.18.0.0", src_mask=0x1FFFF) as s:
        s.run(2_000_000, netns="/run/netns/x", cpu=0)   # blocks; thread-safe wrt. the GIL

The exact harness: with a KnockPlan the program itself writes a valid knock frame over the
flood frames at known positions (same veth, same ring as the flood) and notes when each copy
left (bpf_ktime_get_ns, CLOCK_MONOTONIC: comparable with the allow map's expiry).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
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

#define KNOCK_FRAME 256 /* bytes of the knock frame buffer (the frame is FRAME_LEN long) */

struct knock_frame {
	u8 data[KNOCK_FRAME];
};

struct knock_plan {
	u64 at, gap, copies; /* copy i goes at frame at + i x gap, i < copies */
};

BPF_PERCPU_ARRAY(sent, u64, 1);
/* The knock: a whole frame written over the flood frame at the plan's positions, and when
 * each copy left (bpf_ktime_get_ns). */
BPF_ARRAY(plan, struct knock_plan, 1);
BPF_ARRAY(knock, struct knock_frame, 1);
BPF_ARRAY(knock_ns, u64, KNOCK_COPIES_MAX);
/* The flood's own frame, restored before each flood frame once a knock has been written
 * over the same page (live frames are recycled with the bytes the program left). */
BPF_ARRAY(flood_frame, struct knock_frame, 1);
/* pace[0]: busy helper calls per frame (0: none), to hold the flood below the receiver's
 * capacity (set_pace()). */
BPF_ARRAY(pace, u32, 1);

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

/* The frame leaves, after pace[0] random-number helper calls (~10 ns each). No loop: the
 * verifier would push a state per turn; a binary chain of unrolled calls joins back. */
#define SPIN(n) _Pragma("unroll") for (int j = 0; j < (n); j++) acc ^= bpf_get_prandom_u32()
static __always_inline int leave(void)
{
	u32 zero = 0, *turns = pace.lookup(&zero), t = turns ? *turns : 0;
	u32 acc = bpf_get_prandom_u32(); /* unknown on every path: the paths join (pruned) */

	if (t & 1) { SPIN(1); }
	if (t & 2) { SPIN(2); }
	if (t & 4) { SPIN(4); }
	if (t & 8) { SPIN(8); }
	if (t & 16) { SPIN(16); }
	if (t & 32) { SPIN(32); }
	if (t & 64) { SPIN(64); }
	if (t & 128) { SPIN(128); }
	asm volatile("" : : "r"(acc));
	return bpf_redirect(OUT_IFINDEX, 0);
}

int flood(struct xdp_md *ctx)
{
	u32 zero = 0;
	u64 *n = sent.lookup(&zero), idx;

	if (!n)
		return XDP_ABORTED;
	idx = *n;
	*n += 1;
	struct knock_plan *pl = plan.lookup(&zero);
	if (KNOCKS && pl && pl->copies && pl->gap && idx >= pl->at &&
		(idx - pl->at) % pl->gap == 0 && (idx - pl->at) / pl->gap < pl->copies) {
		u32 i = (idx - pl->at) / pl->gap;
		struct knock_frame *k = knock.lookup(&zero);
		u64 *t = knock_ns.lookup(&i);

		if (!k || bpf_xdp_store_bytes(ctx, 0, k->data, FRAME_LEN) < 0)
			return XDP_ABORTED;
		if (t)
			*t = bpf_ktime_get_ns();
		return leave();
	}
	if (KNOCKS) {
		struct knock_frame *f = flood_frame.lookup(&zero);

		if (!f || bpf_xdp_store_bytes(ctx, 0, f->data, FRAME_LEN) < 0)
			return XDP_ABORTED;
	}

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
	} else if (MODE && ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = (void *)(ip + 1);
		u32 *w = (void *)(udp + 1); /* the 96-byte payload as words: mac 0-7, iv 8-11 */
		if ((void *)(w + 24) > end)
			return XDP_ABORTED;
		w[0] = bpf_get_prandom_u32(); /* junk stays junk (frames are recycled) */
		if (MODE == 1) {
			w[8] = bpf_get_prandom_u32(); /* the IV's tag hint: untagged junk */
		} else {
			w[12] = bpf_get_prandom_u32(); /* tagged junk: the captured IV, fresh ct */
			w[13] = bpf_get_prandom_u32();
		}
	}
	return leave();
}
"""
MODES = {"replay": 0, "junk": 1, "tagged-junk": 2}  # what a UDP flood frame's payload gets
KNOCK_COPIES_MAX = 16
PACE_MAX = 255
FRAME_MAX = 256


def frame(
    src_mac: bytes, dst_mac: bytes, src: str, dst: str, proto: int, l4: bytes, l4_csum: bool = True
) -> bytes:
    """Ethernet + IPv4 (DF) + l4 (TCP/UDP header with payload), checksums filled in."""
    ip = packets.ipv4(src, dst, proto, l4, ident=0, df=True, l4_checksum=l4_csum)
    return packets.eth(ip, dst_mac=dst_mac, src_mac=src_mac)


def tcp_syn(sport: int, dport: int) -> bytes:
    return packets.tcp(sport, dport, packets.SYN, seq=12345, window=64240)


@dataclass(frozen=True)
class KnockPlan:
    """Where the knock's copies go in the flood: frame `at`, then every `gap` frames."""

    at: int
    gap: int
    copies: int = 1

    def check(self) -> None:
        if not (0 <= self.copies <= KNOCK_COPIES_MAX and self.gap >= 1 and self.at >= 0):
            raise ValueError(f"knock copies 0..{KNOCK_COPIES_MAX}, gap >= 1: {self}")


class LiveSender:
    """The sender program for one template frame; run() floods `count` copies.

    mode (UDP): "junk" randomises a payload's first MAC and IV words (untagged junk, distinct
    per frame), "tagged-junk" keeps the template's IV (a captured tag) and randomises the MAC
    and ciphertext, "replay" sends the template's payload unchanged (replays of one packet).
    junk=True/False is the older spelling of "junk"/"replay". knock: the sender writes the
    frame given to set_knock() over flood frames at plan's positions, through the same path,
    and records when each copy left (knock_times())."""

    def __init__(
        self,
        template: bytes,
        out_ifindex: int,
        src_base: str,
        src_mask: int,
        junk: bool = True,
        mode: str | None = None,
        knock: KnockPlan | None = None,
    ):
        self.template = template
        self.knock = knock
        mode = mode or ("junk" if junk else "replay")
        if knock:
            knock.check()
        if knock and len(template) > FRAME_MAX:
            raise ValueError(f"a knocked flood's frame is at most {FRAME_MAX} bytes")
        base = int(IPv4Address(src_base))
        self._prog = Program(
            PROGRAM,
            [
                f"-DSRC_BASE={base}U",
                f"-DSRC_MASK={src_mask}U",
                f"-DOUT_IFINDEX={out_ifindex}",
                f"-DMODE={MODES[mode]}",
                f"-DKNOCKS={int(knock is not None)}",
                f"-DKNOCK_COPIES_MAX={KNOCK_COPIES_MAX}",
                f"-DFRAME_LEN={len(template)}",
            ],
        )
        self.fd = self._prog.fd("flood")
        if knock:
            bpfsys.update(
                self._prog.map_fd("flood_frame"), abi.U32.pack(0), template.ljust(FRAME_MAX, b"\0")
            )
            self.set_plan(knock)

    def set_plan(self, knock: KnockPlan) -> None:
        """Move the knock's copies (a sender made with a KnockPlan only)."""
        if not self.knock:
            raise ValueError("set_plan needs a sender made with a KnockPlan")
        knock.check()
        self.knock = knock
        raw = struct.pack("=QQQ", knock.at, knock.gap, knock.copies)
        bpfsys.update(self._prog.map_fd("plan"), abi.U32.pack(0), raw)

    def set_knock(self, frame_bytes: bytes) -> None:
        """The knock frame (same length as the template), for the next run()."""
        if not self.knock or len(frame_bytes) != len(self.template):
            raise ValueError("set_knock needs a KnockPlan and a frame as long as the template")
        fd = self._prog.map_fd("knock")
        bpfsys.update(fd, abi.U32.pack(0), frame_bytes.ljust(FRAME_MAX, b"\0"))
        ts = self._prog.map_fd("knock_ns")
        for i in range(KNOCK_COPIES_MAX):
            bpfsys.update(ts, abi.U32.pack(i), abi.U64.pack(0))
        self.reset()

    def set_flood(self, frame_bytes: bytes) -> None:
        """Another flood frame (same length; with a KnockPlan only), for the next run()."""
        if not self.knock or len(frame_bytes) != len(self.template):
            raise ValueError("set_flood needs a KnockPlan and a frame as long as the template")
        fd = self._prog.map_fd("flood_frame")
        bpfsys.update(fd, abi.U32.pack(0), frame_bytes.ljust(FRAME_MAX, b"\0"))

    def set_pace(self, turns: int) -> None:
        """Helper calls per frame (0..PACE_MAX, ~10 ns each): a slower flood."""
        if not 0 <= turns <= PACE_MAX:
            raise ValueError(f"pace 0..{PACE_MAX}, got {turns}")
        bpfsys.update(self._prog.map_fd("pace"), abi.U32.pack(0), abi.U32.pack(turns))

    def knock_times(self) -> list[int]:
        """CLOCK_MONOTONIC ns each knock copy left at (0: not reached in the last run)."""
        fd = self._prog.map_fd("knock_ns")
        n = self.knock.copies if self.knock else 0
        return [abi.U64.unpack(bpfsys.lookup(fd, abi.U32.pack(i), 8))[0] for i in range(n)]

    def reset(self) -> None:
        """Frame counting starts again at 0 (the knock's positions count from the run)."""
        size = bpfsys.value_buffer_size(abi.MapType.PERCPU_ARRAY, 8)
        bpfsys.update(self._prog.map_fd("sent"), abi.U32.pack(0), bytes(size))

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
