/* spagate: the layout of every map key, value and record the gate shares with userspace.
 *
 * Mirrored once in Python by spagate/gate/kernel/abi.py (struct formats; offsets are derived
 * there, never written as numbers); tests/bpf/test_contract.py has the compiler report every
 * sizeof and offsetof and compares. Ports are stored in HOST byte order, addresses as 16
 * bytes with IPv4 mapped (::ffff:a.b.c.d). Times are CLOCK_MONOTONIC ns (bpf_ktime_get_ns;
 * time.monotonic_ns() in Python) unless a field says otherwise.
 */
#ifndef SPAGATE_STRUCTS_H
#define SPAGATE_STRUCTS_H

#include "consts.h"
#include "spa_keys.h"

/* allow: (addr, proto, port) -> expiry ns. port 0 = every protected port of proto;
 * proto PROTO_ANY (only with port 0) = every protected port of both protocols. */
struct allow_key {
	__u8 addr[16];
	__u16 port;
	__u8 proto; /* IPPROTO_TCP, IPPROTO_UDP or PROTO_ANY */
	__u8 pad;   /* always 0 */
};

/* allow_hint: src addr (struct addr_key) -> struct allow_hint, written by GateMaps only.
 * host_until is THE expiry of the whole-host grant (allow key PROTO_ANY, port 0; 0 = none):
 * the kernel decides on it without looking in allow. until is an upper bound of every allow
 * entry's expiry of the address: when it has passed, allow holds nothing live for it. So a
 * source never allowed costs one lookup, a whole-host grant one lookup, a port grant three. */
struct allow_hint {
	__u64 host_until;
	__u64 until;
};

/* protected: two bitmaps of 65536 bits, one u64 word per array slot. Slot
 * PROTECTED_SLOT(proto, port), bit port & 63. An array lookup is inlined by the JIT. */
#define PROTECTED_SLOT(is_udp, port) (((is_udp) ? PROTECTED_UDP_BASE : 0u) | ((__u32)(port) >> 6))

/* static_allow: LPM trie over the 16-byte address -> 1. */
struct lpm_key {
	__u32 prefixlen; /* 0..128; an IPv4 /n is stored as ::ffff:0:0/(96+n) */
	__u8 addr[16];
};

/* udp_flows: (src addr, src port, dst port) -> last seen ns. */
struct flow_key {
	__u8 addr[16];
	__u16 sport;
	__u16 dport;
};

/* spa_rate: source bucket -> GCRA theoretical arrival time ns (a token bucket in one u64).
 * The bucket is the source address for IPv4 (mapped), its /64 (low 8 bytes zero) for IPv6. */
struct addr_key {
	__u8 addr[16];
};

/* spa_budget[0]: fixed one-second window shared by all CPUs. */
struct budget {
	__u64 window_start;
	__u64 count;
};

/* spa_seen: first 16 bytes of the MAC of a SPA packet handed to userspace -> when (ns).
 * Flood protection only (the daemon's replay cache is the authority): a replayed packet is
 * dropped before it can spend the global budget. Written by xdp_spa_verify only. */
struct mac_key {
	__u8 mac[16];
};

/* replay: nonce -> until (unix ms). Written and read by the daemon only. */
struct nonce_key {
	__u8 nonce[16];
};

/* spa_events record. payload holds the first `copied` bytes of a `len`-byte UDP payload
 * (only 96-byte payloads with a valid MAC are queued: len = copied = 96; the fields stay so
 * the record format need not change with the payload rule). key: index of the spa_keys slot
 * whose MAC matched. ts: bpf_ktime_get_ns() (CLOCK_MONOTONIC) when it was queued, so the worker
 * can tell how long a knock took from the wire to its window. */
struct spa_event {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u32 ifindex;
	__u16 len;
	__u16 copied;
	__u32 key;
	__u64 ts;
	__u8 payload[SPA_PACKET_SIZE];
};

/* spa_scratch[0] (per CPU): what xdp_gate hands to the tail-called xdp_spa_verify, and the
 * payload copy the MAC is computed over (kept off the 512-byte stack). */
struct spa_scratch {
	__u8 src[16];
	__u8 dst[16];
	__u8 bucket[16]; /* spa_rate key: src, or its /64 for IPv6 */
	__u64 now;      /* clock read by xdp_gate (ns) */
	__u32 off;      /* UDP payload offset from ctx->data */
	__u32 ifindex;
	__u16 sport;
	__u16 dport;
	__u16 len;      /* UDP payload length */
	__u16 pad;
	struct spa_wire wire;
};

#endif
