/* spagate maps: every map of the gate, declared in one place (layouts: structs.h).
 *
 * Every map but spa_events, spa_seen, spa_scratch and spa_progs is pinned under
 * SPAGATE_PIN_DIR. bcc (BPF_TABLE_PINNED) creates and pins a map whose pin does not exist yet
 * and reuses the pinned map otherwise; the loader checks pinned maps against the expected
 * layout before compiling (bcc itself does not).
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
BPF_TABLE_PINNED("array", __u32, struct budget, spa_budget, 1, SG_PIN(spa_budget));
BPF_TABLE_PINNED("percpu_array", __u32, __u64, counters, REASON_COUNT, SG_PIN(counters));
BPF_TABLE_PINNED("lru_hash", struct nonce_key, __u64, replay, REPLAY_CAPACITY, SG_PIN(replay));
/* spa_keys[i]: HMAC midstates of key i (spagate/gate/kernel/spakeys.py); spa_key_count[0]: slots in
 * use. The daemon writes the slots first, then the count. */
BPF_TABLE_PINNED("array", __u32, struct spa_key, spa_keys, SPA_KEYS_MAX, SG_PIN(spa_keys));
BPF_TABLE_PINNED("array", __u32, __u32, spa_key_count, 1, SG_PIN(spa_key_count));
BPF_RINGBUF_OUTPUT(spa_events, RINGBUF_PAGES);
/* Not pinned: the daemon's replay nonces (pinned) are what refuses a replay across a
 * restart; a new program starting with an empty spa_seen lets each captured MAC spend the
 * budget once more, which the budget absorbs. */
BPF_TABLE("lru_hash", struct mac_key, __u64, spa_seen, SPA_SEEN_CAPACITY);
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
