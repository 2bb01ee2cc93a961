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
#define SPA_BUDGET 2000 /* MAC-valid SPA packets per second, all sources together */
#endif
#define SPA_BUDGET_WINDOW_NS 1000000000ULL /* the global budget's fixed window */

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
#define SPA_SEEN_CAPACITY 65536 /* >= budget/s x 2 x max skew (2000 x 10 s) MACs */
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
#define SG_IPV6_EXT_MAX 6  /* IPv6 extension headers walked before giving up (malformed) */

#endif
