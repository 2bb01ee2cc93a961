/* spagate verdict reasons: one per-CPU counter each (map "counters").
 *
 * This enum is the single list of kernel reasons. spagate/gate/kernel/abi.py mirrors it as
 * KernelReason (lower-case names without the REASON_ prefix); tests/bpf/test_contract.py has
 * the compiler report every value and fails when the two differ. Append new reasons at the
 * end: pinned counters keep their index across upgrades.
 */
#ifndef SPAGATE_REASONS_H
#define SPAGATE_REASONS_H

enum spagate_reason {
	REASON_PASS_NOT_IP = 0,          /* not IPv4/IPv6 (ARP, LLDP, runt frame...): passed */
	REASON_PASS_UNRELATED = 1,       /* IP but not for the SPA port nor a protected port */
	REASON_SPA_QUEUED = 2,           /* SPA packet, MAC valid, copied to spa_events, dropped */
	REASON_SPA_RATE_SOURCE = 3,      /* untagged SPA packet over its source's bucket, dropped */
	REASON_SPA_RATE_GLOBAL = 4,      /* retired: the global budget became per identity (26) */
	REASON_SPA_RINGBUF_FULL = 5,     /* SPA packet within budget but spa_events full, dropped */
	REASON_PROTECTED_ALLOWED = 6,    /* protected port, source in the allow map: passed */
	REASON_PROTECTED_STATIC = 7,     /* protected port, source in static_allow: passed */
	REASON_TCP_ESTABLISHED = 8,      /* protected TCP, not a SYN, kernel has the socket: passed */
	REASON_TCP_DROPPED_NEW = 9,      /* protected TCP SYN from a source not allowed: dropped */
	REASON_TCP_DROPPED_STRAY = 10,   /* protected TCP non-SYN, no socket, not allowed: dropped */
	REASON_UDP_FLOW = 11,            /* protected UDP, live flow in udp_flows refreshed: passed */
	REASON_UDP_DROPPED = 12,         /* protected UDP, no live flow, not allowed: dropped */
	REASON_MALFORMED = 13,           /* IP packet whose headers are short or lie: dropped */
	REASON_FRAGMENT_PASSED = 14,     /* non-first fragment (no L4 header): passed */
	REASON_FRAGMENT_DROPPED = 15,    /* first fragment too short for its L4 header, or SPA: dropped */
	REASON_SPA_BAD_SIZE = 16,        /* SPA packet whose payload is not 96 bytes: dropped */
	REASON_SPA_BAD_MAC = 17,         /* SPA packet whose MAC matches no key (tagged: its key) */
	REASON_SPA_TAIL_CALL_FAILED = 18, /* SPA verifier program missing (spa_progs empty): dropped */
	REASON_SPA_REPLAY_DUP = 19,      /* copy of a SPA packet already queued (spa_seen): dropped */
	REASON_FWKNOP_QUEUED = 20,      /* fwknop packet (its length) copied to fwknop_events, dropped */
	REASON_FWKNOP_RATE_SOURCE = 21, /* fwknop packet over its source's bucket (fwknop_rate), dropped */
	REASON_FWKNOP_RATE_GLOBAL = 22, /* fwknop packet over fwknop's budget per second, dropped */
	REASON_FWKNOP_RINGBUF_FULL = 23, /* fwknop packet within budget, fwknop_events full, dropped */
	REASON_FWKNOP_BAD_SIZE = 24,    /* fwknop-port packet not 140..1500 bytes (not fwknop), dropped */
	REASON_SPA_TAG_BAD = 25,         /* SPA packet with a live tag hint whose tag is wrong: dropped */
	REASON_SPA_RATE_IDENTITY = 26,   /* SPA packet over its identity's budget/s: dropped */
	REASON_SPA_UNTAGGED_BUDGET = 27, /* untagged SPA packet over the untagged HMAC budget/s */
	REASON_SPA_UNTAGGED_REFUSED = 28, /* untagged SPA packet while untagged = refuse: dropped */
	/* The next ones count on top of a drop reason (a dropped packet moves two counters), but
	 * ipv6_chain_unwalked, which is a drop reason of its own. */
	REASON_IPV6_CHAIN_UNWALKED = 29, /* IPv6 extension headers past SG_IPV6_EXT_MAX: dropped */
	REASON_REPLY_RST = 30,           /* disguise closed: a TCP RST sent back (XDP_TX) */
	REASON_REPLY_ICMP = 31,          /* disguise closed: ICMP / ICMPv6 port unreachable sent */
	REASON_REPLY_RATELIMITED = 32,   /* disguise closed: no ICMP, over the kernel's rate limit */
	REASON_REPLY_SKIPPED = 33,       /* disguise closed: no reply, the kernel would send none */
	REASON_REPLY_FAILED = 34,        /* disguise closed: the reply program is missing: dropped */
	REASON_COUNT = 35,
};

#endif
