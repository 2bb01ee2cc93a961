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

/* spa_budget[slot]: a fixed one-second window shared by all CPUs. Slots: one per identity
 * (spa_keys slot), then SPA_BUDGET_UNTAGGED and further keyless paths (consts.h). */
struct budget {
	__u64 window_start;
	__u64 count;
};

/* spa_tags: hint (the IV's first 4 bytes, as a __u32 loaded from them) -> the identity whose
 * tag it is in one time step, with that identity's SipHash key. Written by GateMaps only
 * (the worker rotates the hints; docs/admission.md has the derivation). */
struct spa_tag {
	__u64 k0; /* SipHash-2-4 key: little-endian halves of the 16-byte tag key */
	__u64 k1;
	__u32 slot; /* spa_keys slot = identity index */
	__u32 step; /* the time step of the hint (low 32 bits; for inspection) */
};

/* spa_seen key: the IV of a tagged packet (it binds the ciphertext through the tag), the
 * first 16 bytes of the MAC of an untagged one. */
struct seen_key {
	__u8 id[16];
};

/* spa_seen: every packet that passed an HMAC in the kernel (or, tagged, whose HMAC the kernel
 * computed): flood protection only, the daemon's replay cache is the authority. Looked up
 * before any HMAC: a copy is a duplicate (SEEN_QUEUED), a variant with another MAC is junk,
 * known without hashing. Written by xdp_spa_verify; state SEEN_EXPECT by the daemon. */
struct spa_seen_entry {
	__u8 mac[32];   /* the packet's HMAC, as the kernel verified or computed it */
	__u8 src[16];   /* source of the copy queued; SEEN_EXPECT: the one source still welcome */
	__u8 alt_src[16]; /* source of the last other-source copy queued (SPA_SOURCE_MATCH) */
	__u64 first_ns; /* first sighting, CLOCK_MONOTONIC (fine clock) */
	__u64 state;    /* SEEN_KNOWN, SEEN_QUEUED, SEEN_EXPECT (64 bits: bcc's BPF atomics) */
	__u64 alt;      /* copies from other sources queued while undecided (SPA_SOURCE_MATCH) */
	__u32 slot;     /* identity (spa_keys slot) the MAC belongs to */
	__u32 pad;
};

/* icmp_peers: destination (addr_key) -> its ICMP token bucket, as the kernel's inet_peer
 * (inet_peer_xrlim_allow): tokens in ns, capped at XRLIM_BURST_FACTOR x the ratelimit. */
struct icmp_peer {
	__u64 tokens;
	__u64 last; /* ns */
};

/* icmp_global[0]: the kernel's global ICMP credit (icmp_global_allow), shared by all CPUs. */
struct icmp_global {
	__s64 credit;
	__u64 stamp; /* ns of the last refill */
};

/* reply_scratch[0] (per CPU, kernel only): the bytes xdp_reply checksums, copied out of the
 * packet (bpf_csum_diff reads words from memory): up to 1,500 bytes and one pad word. */
struct reply_buf {
	__u8 b[1504];
};

/* replay: nonce -> until (unix ms). Written and read by the daemon only. */
struct nonce_key {
	__u8 nonce[16];
};

/* spa_events record. payload holds the first `copied` bytes of a `len`-byte UDP payload
 * (only 96-byte payloads with a valid MAC are queued: len = copied = 96; the fields stay so
 * the record format need not change with the payload rule). key: index of the spa_keys slot
 * whose MAC matched; path: SPA_PATH_TAGGED or SPA_PATH_UNTAGGED. ts: bpf_ktime_get_ns()
 * (CLOCK_MONOTONIC) when it was queued, so the worker can tell how long a knock took from the
 * wire to its window. */
struct spa_event {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u32 ifindex;
	__u16 len;
	__u16 copied;
	__u16 key;
	__u16 path;
	__u64 ts;
	__u8 payload[SPA_PACKET_SIZE];
};

/* fwknop_events record: an fwknop SPA packet (base64 text, its own HMAC, checked in userspace:
 * its length varies, which the in-kernel MAC of sparoid packets cannot take). payload holds
 * the first `len` bytes (len <= FWKNOP_MAX_PAYLOAD). */
struct fwknop_event {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u32 ifindex;
	__u16 len;
	__u16 pad;
	__u32 pad2;
	__u8 payload[FWKNOP_MAX_PAYLOAD];
};

/* spa_samples record: one dropped SPA packet, for the log (bad MAC or tag, replay, bucket and
 * budget drops), at most SPA_SAMPLE_RATE per second. The source is as on the wire (spoofable
 * for everything but a MAC-valid packet). */
struct spa_sample {
	__u64 ns;      /* CLOCK_MONOTONIC, the program's clock */
	__u8 src[16];
	__u16 sport;
	__u16 dport;
	__u16 reason;  /* enum spagate_reason */
	__u16 key;     /* identity (spa_keys slot) if known, else SPA_KEY_NONE */
	__u32 ifindex;
	__u16 path;    /* SPA_PATH_*, 0 before the path is known */
	__u16 pad;
};

/* spa_scratch[0] (per CPU): what xdp_gate hands to the tail-called xdp_spa_verify, and the
 * payload copy the MAC is computed over (kept off the 512-byte stack). */
struct spa_scratch {
	__u8 src[16];
	__u8 dst[16];
	__u8 bucket[16]; /* spa_rate key: src; IPv6: its /64 (64:ff9b::/96 NAT64: src) */
	__u64 now;      /* clock read by xdp_gate (ns) */
	__u32 off;      /* UDP payload offset from ctx->data */
	__u32 ifindex;
	__u16 sport;
	__u16 dport;
	__u16 len;      /* UDP payload length */
	__u16 path;     /* SPA_PATH_* */
	__u32 slot;     /* tagged: the identity its hint names; a known packet's identity */
	__u32 pad;
	__u64 k0, k1;   /* tagged: that identity's SipHash key */
	/* xdp_spa_verify's decisions before its HMAC, kept here and not in registers: the
	 * verifier then reaches the HMAC in one state, not one per combination (a 1M-insn limit) */
	__u32 first, last; /* key slots the HMAC tries */
	__u32 hit;      /* 1: the packet was in spa_seen */
	__u32 pad2;
	__u64 prev;     /* its spa_seen state before this copy took it */
	__u32 digest[8]; /* HMAC of the last key tried (wire byte order) */
	struct spa_seen_entry seen; /* an entry being written to spa_seen */
	struct spa_wire wire;
};

#endif
