/* spagate: every default, size and limit of the XDP gate, in one place.
 *
 * Mirrored once in Python by spagate/gate/kernel/abi.py; tests/bpf/test_contract.py compiles
 * a probe program that reports these values from the compiler and compares them with abi.py.
 * The loader overrides the #ifndef ones with -D flags from the gate configuration.
 */
#ifndef SPAGATE_CONSTS_H
#define SPAGATE_CONSTS_H

/* -- SPA admission (the loader passes the configured values) -------------------------- */
#ifndef SPA_PORT
#define SPA_PORT 8484 /* sparoid's default port */
#endif
#ifndef SPA_INTERVAL_NS
#define SPA_INTERVAL_NS 1000000000ULL /* one token per second per source */
#endif
#ifndef SPA_BURST
#define SPA_BURST 8 /* per-source bucket size */
#endif
#define SPA_TAU_NS ((SPA_BURST - 1) * SPA_INTERVAL_NS) /* GCRA: (burst - 1) x interval */
#ifndef SPA_BUDGET
#define SPA_BUDGET 2000 /* SPA packets per second and identity that may cost an HMAC */
#endif
#define SPA_BUDGET_WINDOW_NS 1000000000ULL /* every budget's fixed window */
#ifndef SPA_UNTAGGED_BUDGET
#define SPA_UNTAGGED_BUDGET 1000 /* untagged SPA packets per second that may cost HMACs */
#endif
/* What happens to an untagged SPA packet (no live tag hint: deployed sparoid clients). */
#define SPA_UNTAGGED_ACCEPT 0 /* checked against every key, bounded by the source buckets only */
#define SPA_UNTAGGED_BOUNDED 1 /* ... within SPA_UNTAGGED_BUDGET per second */
#define SPA_UNTAGGED_REFUSE 2 /* dropped unhashed */
#ifndef SPA_UNTAGGED_MODE
#define SPA_UNTAGGED_MODE SPA_UNTAGGED_BOUNDED
#endif
#ifndef SPA_SOURCE_MATCH
#define SPA_SOURCE_MATCH 0 /* 1: require-source-match; a copy from another source may be real */
#endif
#define SPA_SEEN_ALT_MAX 2 /* copies from other sources queued while the first is undecided */

/* spa_budget slots: one per identity (spa_keys slot), then one per keyless path. */
#define SPA_BUDGET_UNTAGGED SPA_KEYS_MAX /* the untagged sparoid path's HMAC budget */
#define SPA_BUDGET_SLOTS (SPA_KEYS_MAX + 8) /* SPA_KEYS_MAX + 1 ...: free for further paths */

/* spa_event.path: how the kernel found the packet's key. */
#define SPA_PATH_TAGGED 1   /* its IV carried a live hint and a valid tag: one HMAC */
#define SPA_PATH_UNTAGGED 2 /* no live hint: every key tried, within the untagged budget */

/* spa_seen_entry.state */
#define SEEN_KNOWN 0  /* mac is the packet's right HMAC; no copy queued (yet, or lost) */
#define SEEN_QUEUED 1 /* a copy was queued to userspace: the others are duplicates */
#define SEEN_EXPECT 2 /* userspace refused the copy for its source: only src may still pass */

/* -- drop samples (spa_samples) ------------------------------------------------------------ */
#ifndef SPA_SAMPLE_RATE
#define SPA_SAMPLE_RATE 100 /* drop samples per second and CPU */
#endif
#define SPA_SAMPLES_PAGES 16 /* spa_samples ring size in pages */
#define SPA_KEY_NONE 0xffff /* spa_sample.key when no identity is known */

/* -- fwknop admission (the loader passes the configured values) ---------------------------- */
#ifndef FWKNOP_PORT
#define FWKNOP_PORT 62201 /* fwknopd's default; may be SPA_PORT (told apart by
                           * length); 0: fwknop off */
#endif
#ifndef FWKNOP_BUDGET
#define FWKNOP_BUDGET 500 /* fwknop packets per second queued, all sources together */
#endif
#define FWKNOP_MIN_PAYLOAD 140  /* fwknopd's MIN_SPA_DATA_SIZE */
#define FWKNOP_MAX_PAYLOAD 1500 /* fwknopd's MAX_SPA_PACKET_LEN */
#ifndef FWKNOP_RINGBUF_PAGES
#define FWKNOP_RINGBUF_PAGES 256 /* fwknop_events size in pages; a power of two */
#endif

/* -- protected UDP flows ---------------------------------------------------------------- */
#ifndef UDP_IDLE_NS
#define UDP_IDLE_NS 120000000000ULL /* a UDP flow stays open this long after its last packet */
#endif

/* -- disguise: what a dropped packet looks like from outside (docs/xdp.md, "Disguise") ---- */
#ifndef DISGUISE_CLOSED
#define DISGUISE_CLOSED 0 /* 0 filtered: silence; 1 closed: RST / port unreachable as Linux */
#endif
/* The host's own values, read from sysctl at start (spagate/gate/service/hostnet.py). */
#ifndef REPLY_TTL
#define REPLY_TTL 64 /* net.ipv4.ip_default_ttl */
#endif
#ifndef REPLY_HOP_LIMIT
#define REPLY_HOP_LIMIT 64 /* net.ipv6.conf.<interface>.hop_limit */
#endif
#ifndef ICMP_RATELIMIT_NS
#define ICMP_RATELIMIT_NS 1000000000ULL /* net.ipv4.icmp_ratelimit: per destination */
#endif
#ifndef ICMP6_RATELIMIT_NS
#define ICMP6_RATELIMIT_NS 250000000ULL /* net.ipv6.icmp.ratelimit >> (128 - route plen) / 32 */
#endif
#ifndef ICMP_RATEMASK
#define ICMP_RATEMASK 0x1818 /* net.ipv4.icmp_ratemask: bit 3 = destination unreachable */
#endif
#ifndef ICMP6_LIMIT_UNREACH
#define ICMP6_LIMIT_UNREACH 1 /* net.ipv6.icmp.ratemask has type 1 (destination unreachable) */
#endif
#ifndef ICMP_MSGS_PER_SEC
#define ICMP_MSGS_PER_SEC 1000 /* net.ipv4.icmp_msgs_per_sec: global, IPv4 and IPv6 */
#endif
#ifndef ICMP_MSGS_BURST
#define ICMP_MSGS_BURST 50 /* net.ipv4.icmp_msgs_burst */
#endif
#ifndef REPLY_FLOW_SECRET
#define REPLY_FLOW_SECRET 0x5a5a5a5aU /* IPv6 flow label hash key, random per load */
#endif
#define XRLIM_BURST_FACTOR 6          /* the kernel's per-destination burst: 6 x ratelimit */
#define ICMP_GLOBAL_MIN_NS 20000000ULL /* HZ / 50: no global refill within 20 ms */
#define ICMP4_QUOTE_MAX 548  /* 576 - 20 (IPv4) - 8 (ICMP): bytes of the original quoted */
#define ICMP6_QUOTE_MAX 1232 /* 1280 - 40 (IPv6) - 8 (ICMPv6) */
#define PROG_SLOT_SPA_VERIFY 0 /* spa_progs[0]: xdp_spa_verify */
#define PROG_SLOT_REPLY 1      /* spa_progs[1]: xdp_reply */
#define PROG_SLOTS 2

/* -- map capacities (max_entries) --------------------------------------------------------- */
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
#define SPA_SEEN_CAPACITY 65536 /* packets that passed an HMAC; >= the budgets x 2 x max skew */
#endif
#ifndef SPA_TAGS_CAPACITY
#define SPA_TAGS_CAPACITY 1024 /* live hints: identities x time steps within +-max skew */
#endif
#ifndef ICMP_PEER_CAPACITY
#define ICMP_PEER_CAPACITY 65536 /* icmp_peers: destinations the ICMP limiter remembers */
#endif
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 256 /* spa_events size in pages; a power of two */
#endif

/* -- fixed sizes ------------------------------------------------------------------------ */
#define SPA_KEYS_MAX 8     /* key ring size the kernel tries (old + new during rotation, ...) */
#define SPA_PACKET_SIZE 96 /* sparoid v1: mac[32] || iv[16] || ct[48] */
#define PROTECTED_WORDS 2048    /* protected: 1024 u64 words for TCP, then 1024 for UDP */
#define PROTECTED_UDP_BASE 1024 /* first slot of the UDP bitmap */
#define PROTO_ANY 0 /* allow_key.proto: every protocol (with port 0: every protected port) */
#define SG_VLAN_MAX 2      /* 802.1Q and QinQ */
#ifndef SG_IPV6_EXT_MAX
#define SG_IPV6_EXT_MAX 24 /* IPv6 extension headers walked; more: ipv6_chain_unwalked */
#endif

#endif
