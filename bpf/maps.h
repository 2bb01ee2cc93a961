/* spagate maps: every map of the gate, declared in one place.
 *
 * Layouts are a contract with spagate/gate/maps.py (ctypes mirrors; tests/bpf/test_contract.py
 * compares sizes with what bcc compiled). Ports are stored in HOST byte order, addresses as
 * 16 bytes with IPv4 mapped (::ffff:a.b.c.d). Times are CLOCK_MONOTONIC ns (bpf_ktime_get_ns;
 * time.monotonic_ns() in Python).
 *
 * Every map but spa_events, spa_seen, spa_scratch and spa_progs is pinned under SPAGATE_PIN_DIR. bcc (BPF_TABLE_PINNED) creates and
 * pins a map whose pin does not exist yet and reuses the pinned map otherwise; the loader checks
 * pinned maps against the expected layout before compiling (bcc itself does not).
 */
#ifndef SPAGATE_MAPS_H
#define SPAGATE_MAPS_H

#include "reasons.h"
#include "spa_keys.h"

#ifndef SPAGATE_PIN_DIR
#error "SPAGATE_PIN_DIR must be defined (the loader passes -DSPAGATE_PIN_DIR=\"...\")"
#endif
#define SG_PIN(name) SPAGATE_PIN_DIR "/" #name

#ifndef ALLOW_CAPACITY
#define ALLOW_CAPACITY 65536
#endif
#ifndef STATIC_CAPACITY
#define STATIC_CAPACITY 16384
#endif
#ifndef UDP_FLOW_CAPACITY
#define UDP_FLOW_CAPACITY 65536
#endif
#ifndef SPA_RATE_CAPACITY
#define SPA_RATE_CAPACITY 65536
#endif
#ifndef REPLAY_CAPACITY
#define REPLAY_CAPACITY 65536
#endif
#ifndef SPA_SEEN_CAPACITY
#define SPA_SEEN_CAPACITY 65536 /* >= budget/s x 2 x max skew (2000 x 10 s) MACs */
#endif
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 256
#endif

#define PROTO_ANY 0 /* allow_key.proto: every protocol (with port 0: every protected port) */

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
#define PROTECTED_WORDS 2048 /* 1024 words for TCP, then 1024 for UDP */
#define PROTECTED_SLOT(is_udp, port) (((is_udp) ? 1024u : 0u) | ((__u32)(port) >> 6))

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
 * whose MAC matched. */
struct spa_event {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u32 ifindex;
	__u16 len;
	__u16 copied;
	__u32 key;
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

BPF_TABLE_PINNED("lru_hash", struct allow_key, __u64, allow, ALLOW_CAPACITY, SG_PIN(allow));
BPF_TABLE_PINNED("lru_hash", struct addr_key, struct allow_hint, allow_hint, ALLOW_CAPACITY,
		 SG_PIN(allow_hint));
BPF_TABLE_PINNED("array", __u32, __u64, protected, PROTECTED_WORDS, SG_PIN(protected));
/* LPM tries must be created with BPF_F_NO_PREALLOC (the kernel refuses them otherwise). */
BPF_TABLE_PINNED("lpm_trie", struct lpm_key, __u32, static_allow, STATIC_CAPACITY,
		 SG_PIN(static_allow), BPF_F_NO_PREALLOC);
/* static_count[0]: networks in static_allow (GateMaps.set_static); 0 skips the trie. */
BPF_TABLE_PINNED("array", __u32, __u32, static_count, 1, SG_PIN(static_count));
BPF_TABLE_PINNED("lru_hash", struct flow_key, __u64, udp_flows, UDP_FLOW_CAPACITY,
		 SG_PIN(udp_flows));
BPF_TABLE_PINNED("lru_hash", struct addr_key, __u64, spa_rate, SPA_RATE_CAPACITY,
		 SG_PIN(spa_rate));
BPF_TABLE_PINNED("array", __u32, struct budget, spa_budget, 1, SG_PIN(spa_budget));
BPF_TABLE_PINNED("percpu_array", __u32, __u64, counters, REASON_COUNT, SG_PIN(counters));
BPF_TABLE_PINNED("lru_hash", struct nonce_key, __u64, replay, REPLAY_CAPACITY, SG_PIN(replay));
/* spa_keys[i]: HMAC midstates of key i (spagate/gate/spakeys.py); spa_key_count[0]: slots in
 * use. The daemon writes the slots first, then the count. */
BPF_TABLE_PINNED("array", __u32, struct spa_key, spa_keys, SPA_KEYS_MAX, SG_PIN(spa_keys));
BPF_TABLE_PINNED("array", __u32, __u32, spa_key_count, 1, SG_PIN(spa_key_count));
BPF_RINGBUF_OUTPUT(spa_events, RINGBUF_PAGES);
/* Not pinned: the daemon's replay nonces (pinned) are what refuses a replay across a
 * restart; a new program starting with an empty spa_seen lets each captured MAC spend the
 * budget once more, which the budget absorbs. */
BPF_TABLE("lru_hash", struct mac_key, __u64, spa_seen, SPA_SEEN_CAPACITY);
BPF_PERCPU_ARRAY(spa_scratch, struct spa_scratch, 1);
/* spa_progs[0]: xdp_spa_verify, filled by the loader. Not pinned: the kernel empties a
 * program array when its last user reference (the loader's fd) goes away. */
BPF_PROG_ARRAY(spa_progs, 1);

#endif
