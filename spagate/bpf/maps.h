/* spagate maps: every map of the gate, declared in one place (layouts: structs.h).
 *
 * Every map but the rings (spa_events, fwknop_events, spa_samples), spa_sample_window,
 * spa_scratch and spa_progs is pinned under SPAGATE_PIN_DIR. bcc (BPF_TABLE_PINNED) creates
 * and pins a map whose pin does not exist yet and reuses the pinned map otherwise; the loader
 * checks pinned maps against the expected layout before compiling (bcc itself does not).
 */
#ifndef SPAGATE_MAPS_H
#define SPAGATE_MAPS_H

#include "consts.h"
#include "reasons.h"
#include "structs.h"

#ifndef SPAGATE_PIN_DIR
#error "SPAGATE_PIN_DIR must be defined (the loader passes -DSPAGATE_PIN_DIR=\"...\")"
#endif
#define SG_PIN(name) SPAGATE_PIN_DIR "/" #name

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
BPF_TABLE_PINNED("array", __u32, struct budget, spa_budget, SPA_BUDGET_SLOTS, SG_PIN(spa_budget));
/* fwknop: its own source buckets and budget, so neither protocol's flood starves the other. */
BPF_TABLE_PINNED("lru_hash", struct addr_key, __u64, fwknop_rate, SPA_RATE_CAPACITY,
		 SG_PIN(fwknop_rate));
BPF_TABLE_PINNED("array", __u32, struct budget, fwknop_budget, 1, SG_PIN(fwknop_budget));
BPF_TABLE_PINNED("percpu_array", __u32, __u64, counters, REASON_COUNT, SG_PIN(counters));
BPF_TABLE_PINNED("lru_hash", struct nonce_key, __u64, replay, REPLAY_CAPACITY, SG_PIN(replay));
/* replay_since[0]: CLOCK_BOOTTIME ns from which `replay` remembers every accepted packet (0:
 * always has; bpffs and the boot clock both start again at a reboot). The loader sets it when it creates `replay` afresh (a reboot emptied bpffs, a new pin
 * dir): a packet stamped before it may have been accepted already and is refused. Userspace
 * only: the program never reads it. */
BPF_TABLE_PINNED("array", __u32, __u64, replay_since, 1, SG_PIN(replay_since));
/* spa_keys[i]: HMAC midstates of key i (spagate/gate/kernel/spakeys.py); spa_key_count[0]: slots in
 * use. The daemon writes the slots first, then the count. */
BPF_TABLE_PINNED("array", __u32, struct spa_key, spa_keys, SPA_KEYS_MAX, SG_PIN(spa_keys));
BPF_TABLE_PINNED("array", __u32, __u32, spa_key_count, 1, SG_PIN(spa_key_count));
/* spa_tags: live tag hints -> identity and SipHash key (GateMaps.set_spa_tags). A hash, not
 * an LRU: only the worker adds and removes entries, a flood can neither. */
BPF_TABLE_PINNED("hash", __u32, struct spa_tag, spa_tags, SPA_TAGS_CAPACITY, SG_PIN(spa_tags));
/* spa_seen: pinned, so the worker can mark a refused copy's real source (SEEN_EXPECT) and a
 * restart keeps replays duplicates. */
BPF_TABLE_PINNED("lru_hash", struct seen_key, struct spa_seen_entry, spa_seen, SPA_SEEN_CAPACITY,
		 SG_PIN(spa_seen));
BPF_RINGBUF_OUTPUT(spa_events, RINGBUF_PAGES);
BPF_RINGBUF_OUTPUT(fwknop_events, FWKNOP_RINGBUF_PAGES);
/* Drop samples for the log; the loader pins the ring for the worker (kernel.pins.EXTRA_PINS).
 * spa_sample_window: per CPU, SPA_SAMPLE_RATE samples per second each. */
BPF_RINGBUF_OUTPUT(spa_samples, SPA_SAMPLES_PAGES);
BPF_PERCPU_ARRAY(spa_sample_window, struct budget, 1);
BPF_PERCPU_ARRAY(spa_scratch, struct spa_scratch, 1);
/* spa_progs[PROG_SLOT_SPA_VERIFY]: xdp_spa_verify, [PROG_SLOT_REPLY]: xdp_reply; filled by the
 * loader and pinned with the program (the kernel empties a program array when its last user
 * reference goes away). */
BPF_PROG_ARRAY(spa_progs, PROG_SLOTS);
/* The closed disguise's ICMP limiter (xdp_reply), not pinned: a reload starts it afresh, as a
 * reboot does the kernel's. */
BPF_TABLE("lru_hash", struct addr_key, struct icmp_peer, icmp_peers, ICMP_PEER_CAPACITY);
BPF_ARRAY(icmp_global, struct icmp_global, 1);
/* xdp_reply's per-CPU copy of the bytes it checksums (bpf_csum_diff reads words from memory). */
BPF_PERCPU_ARRAY(reply_scratch, struct reply_buf, 1);

#endif
