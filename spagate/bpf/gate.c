/* spagate XDP gate. Verdicts (docs/xdp.md has the full table):
 *   SPA port (UDP)   size, tag hint, tail call to xdp_spa_verify: tag, spa_seen, budgets
 *                    (per identity; untagged: source bucket, untagged budget), one HMAC
 *                    (tagged) or all (untagged), copy to spa_events; always dropped
 *   fwknop port      source bucket, fwknop budget, copy to fwknop_events; always dropped
 *   protected TCP    SYN: allow map / static_allow; other segments: kernel socket, allow, static
 *   protected UDP    live flow in udp_flows, allow map (creates the flow), static_allow
 *   everything else  XDP_PASS untouched
 * A drop on the SPA port or a protected port leaves through sg_reject() (reply.h): silent
 * (disguise filtered) or answered as a closed port by the tail-called xdp_reply (closed).
 * Defaults and compile-time options (-D): consts.h (SPA_PORT, SPA_INTERVAL_NS, SPA_BURST,
 * SPA_BUDGET, UDP_IDLE_NS, capacities, DISGUISE_CLOSED and the host's reply values), plus
 * SPAGATE_COARSE_CLOCK. Maps: maps.h. Parsing: parsing.h. Replies: reply.h.
 */
#include "consts.h"
#include "maps.h"
#include "parsing.h"

static __always_inline struct spa_key *spa_key_at(__u32 *slot)
{
	return spa_keys.lookup(slot);
}

static __always_inline __u32 *spa_key_count_get(void)
{
	__u32 zero = 0;

	return spa_key_count.lookup(&zero);
}

#include "spa_mac.h"
#include "siphash.h"

/* Read the clock only where a decision needs it (after a map hit, on the SPA/UDP paths). */
#ifdef SPAGATE_COARSE_CLOCK
#define now_ns() bpf_ktime_get_coarse_ns()
#else
#define now_ns() bpf_ktime_get_ns()
#endif

#define SG_EEXIST 17 /* errno: BPF_NOEXIST update of a key already there */

static __always_inline int verdict(__u32 reason, int action)
{
	__u64 *c = counters.lookup(&reason);

	if (c)
		*c += 1; /* per-CPU slot: no atomic needed */
	return action;
}

/* sg_reject()'s tail call to xdp_reply (reply.h cannot name a map: bcc rewrites gate.c only). */
static __always_inline void sg_reply_call(struct xdp_md *ctx)
{
	spa_progs.call(ctx, PROG_SLOT_REPLY);
}

#include "reply.h"

static __always_inline void copy_addr(__u8 *dst, const struct pkt *p, int want_dst)
{
	__u32 *d = (__u32 *)dst;

	if (p->v6) {
		struct ipv6hdr *ip6 = p->l3;
		__u32 *s = want_dst ? ip6->daddr.in6_u.u6_addr32 : ip6->saddr.in6_u.u6_addr32;
		d[0] = s[0];
		d[1] = s[1];
		d[2] = s[2];
		d[3] = s[3];
	} else {
		struct iphdr *ip = p->l3;
		d[0] = 0;
		d[1] = 0;
		d[2] = IPV6_MAPPED_PREFIX_W2_BE;
		d[3] = want_dst ? ip->daddr : ip->saddr;
	}
}

static __always_inline int expired(__u64 *expiry, __u64 *now)
{
	if (!*now)
		*now = now_ns();
	return *expiry <= *now;
}

/* The bucket key of a source (struct addr_key): the address for IPv4, its /64 for IPv6 (whoever
 * holds a /64 has 2^64 addresses for free). */
static __always_inline void source_bucket(__u8 *key, const struct pkt *p)
{
	__u32 *w = (__u32 *)key;

	copy_addr(key, p, 0);
	if (p->v6) {
		w[2] = 0;
		w[3] = 0;
	}
}

/* Source allowed for (proto, port): a live whole-host grant (allow_hint.host_until), else a
 * live allow entry (proto, port) or (proto, every port). The key's addr is filled by the
 * caller. No hint, or its upper bound passed: nothing live in allow, no lookup there. */
static __always_inline int allow_hit(struct allow_key *k, __u8 proto, __u16 port, __u64 *now)
{
	struct allow_hint *h;
	__u64 *exp;

	h = allow_hint.lookup((struct addr_key *)k->addr);
	if (!h)
		return 0;
	if (!expired(&h->host_until, now))
		return 1; /* the daemon's usual grant: the whole host */
	if (expired(&h->until, now))
		return 0;
	k->pad = 0;
	k->proto = proto;
	k->port = port;
	exp = allow.lookup(k);
	if (exp && !expired(exp, now))
		return 1;
	k->port = 0;
	exp = allow.lookup(k);
	if (exp && !expired(exp, now))
		return 1;
	return 0;
}

/* Source in static_allow; the trie is skipped while the list is empty. */
static __always_inline int static_hit(const __u8 *addr)
{
	struct lpm_key k = {.prefixlen = 128};
	__u32 zero = 0;
	__u32 *n = static_count.lookup(&zero);

	if (!n || !*n)
		return 0;
	__builtin_memcpy(k.addr, addr, 16);
	return static_allow.lookup(&k) != NULL;
}

/* -- SPA admission (docs/admission.md) -------------------------------------------------- */

/* Fixed one-second windows, one per slot of spa_budget (an identity, the untagged path...).
 * Racing resets between CPUs only blur the edge. Signed: a window started "in the future"
 * (written from userspace with a finer clock) is not mistaken for an old one. */
static __always_inline int budget_full(__u32 slot, __u64 limit, __u64 now)
{
	struct budget *b = spa_budget.lookup(&slot);

	if (!b)
		return 1;
	if ((__s64)(now - b->window_start) >= (__s64)SPA_BUDGET_WINDOW_NS)
		return 0;
	return b->count >= limit;
}

static __always_inline int budget_take(__u32 slot, __u64 limit, __u64 now)
{
	struct budget *b = spa_budget.lookup(&slot);

	if (!b)
		return 0;
	if ((__s64)(now - b->window_start) >= (__s64)SPA_BUDGET_WINDOW_NS) {
		b->window_start = now;
		b->count = 0;
	}
	return __sync_fetch_and_add(&b->count, 1) < limit;
}

/* A drop sample for the log: at most SPA_SAMPLE_RATE per second and CPU (a per-CPU window:
 * no atomics; over it, the cost is one lookup and a compare). */
static __always_inline void spa_sample(struct spa_scratch *s, __u32 reason, __u32 key)
{
	struct spa_sample *r;
	struct budget *w;
	__u32 zero = 0;

	w = spa_sample_window.lookup(&zero);
	if (!w)
		return;
	if ((__s64)(s->now - w->window_start) >= (__s64)SPA_BUDGET_WINDOW_NS) {
		w->window_start = s->now;
		w->count = 0;
	}
	if (w->count >= SPA_SAMPLE_RATE)
		return;
	w->count += 1;
	r = spa_samples.ringbuf_reserve(sizeof(struct spa_sample));
	if (!r)
		return;
	r->ns = s->now;
	__builtin_memcpy(r->src, s->src, 16);
	r->sport = s->sport;
	r->dport = s->dport;
	r->reason = reason;
	r->key = key;
	r->ifindex = s->ifindex;
	r->path = s->path;
	r->pad = 0;
	spa_samples.ringbuf_submit(r, BPF_RB_NO_WAKEUP); /* the worker drains it every poll */
}

/* Every SPA drop after the scratch is filled leaves here: the sampled reasons are sampled. */
static __always_inline int spa_drop(struct xdp_md *ctx, struct spa_scratch *s, __u32 reason,
				    __u32 key)
{
	if (reason == REASON_SPA_BAD_MAC || reason == REASON_SPA_TAG_BAD ||
	    reason == REASON_SPA_REPLAY_DUP || reason == REASON_SPA_RATE_SOURCE ||
	    reason == REASON_SPA_RATE_IDENTITY || reason == REASON_SPA_UNTAGGED_BUDGET)
		spa_sample(s, reason, key); /* reason is a constant here: the test folds away */
	return sg_reject(ctx, reason);
}

/* SPA port, first half (in xdp_gate): size, then the tag hint: a live hint names the identity
 * (tagged path); no hint: the untagged path, refused or over its budget here, cheaply. Then
 * hand over to xdp_spa_verify. */
static __always_inline int spa(struct xdp_md *ctx, struct pkt *p, struct udphdr *uh, void *end)
{
	struct spa_scratch *s;
	struct spa_tag *tag;
	__u32 zero = 0, hint;
	__u8 *pl = (void *)(uh + 1);
	__u16 ulen;

	if (p->first_frag)
		return verdict(REASON_FRAGMENT_DROPPED, XDP_DROP); /* SPA packets are never fragmented */
	ulen = sg_ntohs(uh->len);
	if ((void *)(uh + 1) > end || ulen < sizeof(*uh) || ulen > p->l4_len)
		return sg_reject(ctx, REASON_MALFORMED);
	/* ::ffff:a.b.c.d is never a source on the wire: userspace would take the sender for that
	 * IPv4 host (its bucket, its source match). Before anything is charged. */
	if (p->mapped_src)
		return sg_reject(ctx, REASON_MALFORMED);
	if (ulen != sizeof(*uh) + SPA_PACKET_SIZE)
		return sg_reject(ctx, REASON_SPA_BAD_SIZE);
	if ((void *)(pl + SPA_PACKET_SIZE) > end)
		return sg_reject(ctx, REASON_MALFORMED); /* ulen <= l4_len: for the verifier */
	s = spa_scratch.lookup(&zero);
	if (!s)
		return sg_reject(ctx, REASON_SPA_TAIL_CALL_FAILED);

	copy_addr(s->src, p, 0);
	copy_addr(s->dst, p, 1);
	s->now = now_ns();
	s->off = (void *)pl - (void *)(long)ctx->data;
	s->ifindex = ctx->ingress_ifindex;
	s->sport = sg_ntohs(uh->source);
	s->dport = sg_ntohs(uh->dest);
	s->len = SPA_PACKET_SIZE;
	s->pad = 0;

	/* The hint: the IV's first 4 bytes (payload offset 32), as loaded on this host. */
	__builtin_memcpy(&hint, pl + 32, sizeof(hint));
	tag = spa_tags.lookup(&hint);
	if (tag) {
		s->path = SPA_PATH_TAGGED;
		s->slot = tag->slot;
		s->k0 = tag->k0;
		s->k1 = tag->k1;
	} else {
		s->path = SPA_PATH_UNTAGGED;
		s->slot = SPA_KEY_NONE;
		if (SPA_UNTAGGED_MODE == SPA_UNTAGGED_REFUSE)
			return sg_reject(ctx, REASON_SPA_UNTAGGED_REFUSED);
		/* Over budget: dropped before the tail call (the steady state of a junk flood). */
		if (SPA_UNTAGGED_MODE == SPA_UNTAGGED_BOUNDED &&
		    budget_full(SPA_BUDGET_UNTAGGED, SPA_UNTAGGED_BUDGET, s->now))
			return spa_drop(ctx, s, REASON_SPA_UNTAGGED_BUDGET, SPA_KEY_NONE);
	}
	/* The checks with hashes (~13k instructions per HMAC) live in their own program: inlined
	 * here the verifier would walk them once per parse_packet() path and run out of budget. */
	spa_progs.call(ctx, PROG_SLOT_SPA_VERIFY);
	return sg_reject(ctx, REASON_SPA_TAIL_CALL_FAILED);
}

/* fwknop port: its own per-source bucket, its own budget, then the whole payload to
 * fwknop_events; always dropped through sg_reject() (the port looks unused, as the SPA
 * port does). No MAC here: fwknop's HMAC covers a base64
 * text of any length, the worker checks it; so fwknop junk can spend fwknop's budget, never
 * sparoid's (separate maps), and never more than FWKNOP_BUDGET packets a second. */
static __always_inline int fwknop(struct xdp_md *ctx, struct pkt *p, struct udphdr *uh, void *end)
{
	struct fwknop_event *e;
	struct addr_key bucket;
	struct budget *b;
	__u32 zero = 0, len;
	__u64 now, tat, *stored;
	__u16 ulen;

	if (p->first_frag)
		return verdict(REASON_FRAGMENT_DROPPED, XDP_DROP);
	ulen = sg_ntohs(uh->len);
	if ((void *)(uh + 1) > end || ulen < sizeof(*uh) || ulen > p->l4_len)
		return sg_reject(ctx, REASON_MALFORMED);
	if (p->mapped_src)
		return sg_reject(ctx, REASON_MALFORMED);
	len = ulen - sizeof(*uh);
	if (len < FWKNOP_MIN_PAYLOAD || len > FWKNOP_MAX_PAYLOAD)
		return sg_reject(ctx, REASON_FWKNOP_BAD_SIZE);
	source_bucket(bucket.addr, p);
	now = now_ns();
	stored = fwknop_rate.lookup(&bucket);
	if (stored) {
		tat = *stored;
		if (tat < now)
			tat = now;
		if (tat - now > SPA_TAU_NS)
			return sg_reject(ctx, REASON_FWKNOP_RATE_SOURCE);
		*stored = tat + SPA_INTERVAL_NS;
	} else {
		tat = now + SPA_INTERVAL_NS;
		fwknop_rate.update(&bucket, &tat);
	}
	b = fwknop_budget.lookup(&zero);
	if (!b)
		return sg_reject(ctx, REASON_FWKNOP_RATE_GLOBAL);
	if (now - b->window_start >= SPA_BUDGET_WINDOW_NS) {
		b->window_start = now;
		b->count = 0;
	}
	if (__sync_fetch_and_add(&b->count, 1) >= FWKNOP_BUDGET)
		return sg_reject(ctx, REASON_FWKNOP_RATE_GLOBAL);
	e = fwknop_events.ringbuf_reserve(sizeof(struct fwknop_event));
	if (!e)
		return sg_reject(ctx, REASON_FWKNOP_RINGBUF_FULL);
	/* len is bounded above (the check above): the verifier accepts it as the copy size. */
	if (bpf_xdp_load_bytes(ctx, (void *)(uh + 1) - (void *)(long)ctx->data, e->payload,
			       len) < 0) {
		fwknop_events.ringbuf_discard(e, 0);
		return sg_reject(ctx, REASON_MALFORMED);
	}
	copy_addr(e->src, p, 0);
	copy_addr(e->dst, p, 1);
	e->sport = sg_ntohs(uh->source);
	e->dport = sg_ntohs(uh->dest);
	e->ifindex = ctx->ingress_ifindex;
	e->len = len;
	e->pad = 0;
	e->pad2 = 0;
	fwknop_events.ringbuf_submit(e, 0);
	return sg_reject(ctx, REASON_FWKNOP_QUEUED);
}

static __always_inline int tcp_established(struct xdp_md *ctx, struct pkt *p, struct tcphdr *th)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 size;
	__u32 state;

	if (p->v6) {
		struct ipv6hdr *ip6 = p->l3;
		__builtin_memcpy(t.ipv6.saddr, ip6->saddr.in6_u.u6_addr32, 16);
		__builtin_memcpy(t.ipv6.daddr, ip6->daddr.in6_u.u6_addr32, 16);
		t.ipv6.sport = th->source;
		t.ipv6.dport = th->dest;
		size = sizeof(t.ipv6);
	} else {
		struct iphdr *ip = p->l3;
		t.ipv4.saddr = ip->saddr;
		t.ipv4.daddr = ip->daddr;
		t.ipv4.sport = th->source;
		t.ipv4.dport = th->dest;
		size = sizeof(t.ipv4);
	}
	/* skc: also finds request (SYN_RECV) and TIME_WAIT sockets, which are not full sockets. */
	sk = bpf_skc_lookup_tcp(ctx, &t, size, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	state = sk->state;
	bpf_sk_release(sk); /* the verifier refuses to exit while a reference is held */
	return state != BPF_TCP_LISTEN; /* a listener alone means "nobody talks to you yet" */
}

static __always_inline int tcp(struct xdp_md *ctx, struct pkt *p, struct tcphdr *th, void *end,
			       __u16 dport)
{
	struct allow_key k;
	__u64 now = 0;
	__u32 doff;

	if ((void *)(th + 1) > end || p->l4_len < sizeof(*th))
		return verdict(p->first_frag ? REASON_FRAGMENT_DROPPED : REASON_MALFORMED, XDP_DROP);
	doff = th->doff * 4;
	if (doff < sizeof(*th) || (!p->first_frag && doff > p->l4_len))
		return verdict(REASON_MALFORMED, XDP_DROP);

	if (!(th->syn && !th->ack) && tcp_established(ctx, p, th))
		return verdict(REASON_TCP_ESTABLISHED, XDP_PASS);
	if (!p->mapped_src) {
		copy_addr(k.addr, p, 0);
		if (allow_hit(&k, IPPROTO_TCP, dport, &now))
			return verdict(REASON_PROTECTED_ALLOWED, XDP_PASS);
		if (static_hit(k.addr))
			return verdict(REASON_PROTECTED_STATIC, XDP_PASS);
	}
	if (th->syn && !th->ack)
		return sg_reject(ctx, REASON_TCP_DROPPED_NEW);
	return sg_reject(ctx, REASON_TCP_DROPPED_STRAY);
}

static __always_inline int udp(struct xdp_md *ctx, struct pkt *p, struct udphdr *uh, void *end,
			       __u16 sport, __u16 dport)
{
	struct flow_key fk;
	struct allow_key k;
	__u64 now = 0, *last;
	__u16 ulen;

	if ((void *)(uh + 1) > end || p->l4_len < sizeof(*uh))
		return verdict(p->first_frag ? REASON_FRAGMENT_DROPPED : REASON_MALFORMED, XDP_DROP);
	ulen = sg_ntohs(uh->len);
	/* UDP-Lite's field is the checksum coverage: 0 (all) or 8..length. */
	if (p->proto == IPPROTO_UDPLITE && ulen == 0)
		ulen = sizeof(*uh);
	if (ulen < sizeof(*uh) || (!p->first_frag && ulen > p->l4_len))
		return verdict(REASON_MALFORMED, XDP_DROP);
	if (p->mapped_src)
		return sg_reject(ctx, REASON_UDP_DROPPED);

	copy_addr(k.addr, p, 0);
	__builtin_memcpy(fk.addr, k.addr, 16);
	fk.sport = sport;
	fk.dport = dport;
	last = udp_flows.lookup(&fk);
	if (last) {
		now = now_ns();
		if ((__s64)(now - *last) < (__s64)UDP_IDLE_NS) {
			if (*last != now)
				*last = now; /* in-place refresh: no map update call */
			return verdict(REASON_UDP_FLOW, XDP_PASS);
		}
	}
	if (allow_hit(&k, IPPROTO_UDP, dport, &now)) {
		udp_flows.update(&fk, &now);
		return verdict(REASON_PROTECTED_ALLOWED, XDP_PASS);
	}
	if (static_hit(k.addr))
		return verdict(REASON_PROTECTED_STATIC, XDP_PASS);
	return sg_reject(ctx, REASON_UDP_DROPPED);
}

int xdp_gate(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct cursor c = {.pos = data, .end = end};
	struct pkt p;
	__u16 sport, dport;
	__u64 *word;
	__u32 slot;
	int r;

	r = parse_packet(&c, &p);
	if (r != PARSE_OK) {
		if (r == REASON_PASS_NOT_IP || r == REASON_PASS_UNRELATED ||
		    r == REASON_FRAGMENT_PASSED)
			return verdict(r, XDP_PASS);
		return verdict(r, XDP_DROP); /* the kernel would not answer these either */
	}
	/* Re-check the 4 port bytes on this path: the verifier does not carry the bound across
	 * the parse_packet() return value. */
	if (p.l4 + 4 > end)
		return verdict(REASON_MALFORMED, XDP_DROP);
	sport = sg_ntohs(*(__be16 *)p.l4);
	dport = sg_ntohs(*(__be16 *)(p.l4 + 2));

	/* fwknop on its own port, or on the SPA port told apart by length (sparoid's is fixed);
	 * FWKNOP_PORT 0: no fwknop (the port passes untouched like any unprotected one). */
	if (FWKNOP_PORT != 0 && p.proto == IPPROTO_UDP && dport == FWKNOP_PORT &&
	    (FWKNOP_PORT != SPA_PORT || p.l4_len != sizeof(struct udphdr) + SPA_PACKET_SIZE))
		return fwknop(ctx, &p, p.l4, end);
	if (p.proto == IPPROTO_UDP && dport == SPA_PORT)
		return spa(ctx, &p, p.l4, end);

	slot = PROTECTED_SLOT(p.proto != IPPROTO_TCP, dport); /* UDP-Lite: the UDP bitmap */
	word = protected.lookup(&slot);
	if (!word || !(*word & (1ULL << (dport & 63))))
		return verdict(REASON_PASS_UNRELATED, XDP_PASS);
	if (p.proto == IPPROTO_TCP)
		return tcp(ctx, &p, p.l4, end, dport);
	return udp(ctx, &p, p.l4, end, sport, dport);
}

static __always_inline int same16(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])) == 0;
}

static __always_inline int same_mac(const __u8 *a, const __u32 *b)
{
	const __u32 *x = (const __u32 *)a;
	__u32 d = 0;

#pragma unroll
	for (int i = 0; i < 8; i++)
		d |= x[i] ^ b[i];
	return d == 0;
}

#define NAT64_PREFIX_W0_BE sg_htonl(0x0064ff9b) /* first word of 64:ff9b::/96 (RFC 6052) */

/* Per source (untagged path only): GCRA. tat = when the bucket would be full again; over tau
 * = over burst. A native IPv6 source's bucket is its /64 (one holder has 2^64 addresses), but
 * a NAT64 source (64:ff9b::/96) embeds one IPv4 host: its bucket is that address. */
static __always_inline int bucket_ok(struct spa_scratch *s)
{
	__u32 *w = (__u32 *)s->bucket;
	__u64 tat, *stored;

	__builtin_memcpy(s->bucket, s->src, 16);
	if (w[1] == 0 && ((w[0] == 0 && w[2] == IPV6_MAPPED_PREFIX_W2_BE) || /* IPv4 */
			  (w[0] == NAT64_PREFIX_W0_BE && w[2] == 0))) {
		/* one host: the whole address */
	} else {
		w[2] = 0;
		w[3] = 0;
	}
	stored = spa_rate.lookup((struct addr_key *)s->bucket);
	if (stored) {
		tat = *stored;
		if (tat < s->now)
			tat = s->now;
		if (tat - s->now > SPA_TAU_NS)
			return 0;
		*stored = tat + SPA_INTERVAL_NS;
	} else {
		tat = s->now + SPA_INTERVAL_NS;
		spa_rate.update((struct addr_key *)s->bucket, &tat);
	}
	return 1;
}

/* Copy the scratch's packet into spa_events; 0 when the ring is full. */
static __always_inline int spa_queue(struct spa_scratch *s, __u32 slot)
{
	struct spa_event *e = spa_events.ringbuf_reserve(sizeof(struct spa_event));

	if (!e)
		return 0;
	__builtin_memcpy(e->src, s->src, 16);
	__builtin_memcpy(e->dst, s->dst, 16);
	e->sport = s->sport;
	e->dport = s->dport;
	e->ifindex = s->ifindex;
	e->len = SPA_PACKET_SIZE;
	e->copied = SPA_PACKET_SIZE;
	e->key = slot;
	e->path = s->path;
	e->ts = bpf_ktime_get_ns(); /* not now_ns(): the coarse clock is too coarse for latency */
	__builtin_memcpy(e->payload, &s->wire, SPA_PACKET_SIZE);
	spa_events.ringbuf_submit(e, 0);
	return 1;
}

/* A new spa_seen entry in the scratch: mac, this packet's source, now, state, slot. */
static __always_inline void seen_fill(struct spa_scratch *s, const __u32 *mac, __u32 state,
				      __u32 slot)
{
	__builtin_memcpy(s->seen.mac, mac, 32);
	__builtin_memcpy(s->seen.src, s->src, 16);
	__builtin_memset(s->seen.alt_src, 0, 16);
	s->seen.first_ns = bpf_ktime_get_ns(); /* the fine clock: benches read it */
	s->seen.state = state;
	s->seen.alt = 0;
	s->seen.slot = slot;
	s->seen.pad = 0;
}

/* SPA port, second half: tail-called from spa() with spa_scratch[0] filled. In order:
 *   tagged   the tag (SipHash, ~100 ns): a wrong one is dropped unhashed
 *   both     spa_seen: a copy already queued, or a variant of a known packet with another
 *            MAC, is dropped unhashed; a known packet not queued yet may pass
 *   tagged   the identity's budget, then the ONE HMAC of the key the hint names
 *   untagged the source's bucket, the untagged budget, the HMAC of every key, then the
 *            identity's budget
 * then spa_seen and the ring record. Always dropped through sg_reject(): silent (filtered) or
 * a port unreachable (closed), as for a port nobody listens on. */
int xdp_spa_verify(struct xdp_md *ctx)
{
	struct spa_seen_entry *e;
	struct spa_scratch *s;
	struct seen_key *key;
	__u32 zero = 0, *count;
	__u64 prev;
	int slot, r;

	s = spa_scratch.lookup(&zero);
	if (!s)
		return sg_reject(ctx, REASON_SPA_TAIL_CALL_FAILED);
	if (bpf_xdp_load_bytes(ctx, s->off, &s->wire, sizeof(s->wire)) < 0)
		return sg_reject(ctx, REASON_MALFORMED); /* cannot happen: xdp_gate checked len */

	if (s->path == SPA_PATH_TAGGED) {
		if (!spa_tag_ok(s->k0, s->k1, &s->wire))
			return spa_drop(ctx, s, REASON_SPA_TAG_BAD, s->slot);
		key = (struct seen_key *)s->wire.body; /* the IV: a map value pointer is a valid key */
	} else {
		key = (struct seen_key *)s->wire.mac;
	}

	/* Known before any HMAC? Lookup first: a duplicate then costs one lookup and evicts
	 * nothing (an LRU insert may). */
	s->hit = 0;
	s->prev = SEEN_KNOWN;
	e = spa_seen.lookup(key);
	if (e) {
		if (!same_mac(e->mac, s->wire.mac))
			return spa_drop(ctx, s, REASON_SPA_BAD_MAC, e->slot); /* known right MAC: not this */
		prev = e->state;
		if (prev == SEEN_QUEUED) {
			/* The sender's own copies (the client sends 3): counted, never sampled, so
			 * an accepted knock leaves no refusal in the log. */
			if (same16(e->src, s->src) || same16(e->alt_src, s->src))
				return sg_reject(ctx, REASON_SPA_REPLAY_DUP);
			/* require-source-match: a copy from another source may be the real one (the
			 * first may be an on-path copy sent from elsewhere); a few may pass. */
			if (!SPA_SOURCE_MATCH || e->alt >= SPA_SEEN_ALT_MAX ||
			    __sync_fetch_and_add(&e->alt, 1) >= SPA_SEEN_ALT_MAX)
				return spa_drop(ctx, s, REASON_SPA_REPLAY_DUP, e->slot);
			__builtin_memcpy(e->alt_src, s->src, 16); /* its own copies: duplicates */
		} else if (prev == SEEN_EXPECT && !same16(e->src, s->src)) {
			return spa_drop(ctx, s, REASON_SPA_REPLAY_DUP, e->slot);
		} else if (__sync_val_compare_and_swap(&e->state, prev, SEEN_QUEUED) != prev) {
			return spa_drop(ctx, s, REASON_SPA_REPLAY_DUP, e->slot); /* another CPU took it */
		}
		s->hit = 1;
		s->prev = prev;
		s->slot = e->slot;
	}

	if (s->hit || s->path == SPA_PATH_TAGGED) {
		/* One key: the one named. Charged before the HMAC: it bounds the identity's HMACs. */
		if (!budget_take(s->slot, SPA_BUDGET, s->now)) {
			slot = s->slot;
			r = REASON_SPA_RATE_IDENTITY;
			goto restore;
		}
		s->first = s->slot;
		s->last = s->slot + 1;
	} else {
		if (!bucket_ok(s))
			return spa_drop(ctx, s, REASON_SPA_RATE_SOURCE, SPA_KEY_NONE);
		if (SPA_UNTAGGED_MODE == SPA_UNTAGGED_BOUNDED &&
		    !budget_take(SPA_BUDGET_UNTAGGED, SPA_UNTAGGED_BUDGET, s->now))
			return spa_drop(ctx, s, REASON_SPA_UNTAGGED_BUDGET, SPA_KEY_NONE);
		s->first = 0;
		s->last = SPA_KEYS_MAX;
	}

	/* The one HMAC call site of the program (one inlined copy), reached in one state. */
	slot = spa_mac_range(&s->wire, s->first, s->last, s->digest);

	key = s->path == SPA_PATH_TAGGED ? (struct seen_key *)s->wire.body
					 : (struct seen_key *)s->wire.mac;
	if (slot < 0) {
		if (s->hit) {
			slot = s->slot;
			r = REASON_SPA_BAD_MAC;
			goto restore;
		}
		if (s->path != SPA_PATH_TAGGED)
			return spa_drop(ctx, s, REASON_SPA_BAD_MAC, SPA_KEY_NONE);
		count = spa_key_count_get();
		if (count && s->slot < *count) {
			/* A valid tag, a wrong MAC: a captured packet with its MAC changed. Remember
			 * the right MAC (the digest of the one key tried): further variants are
			 * dropped unhashed. */
			seen_fill(s, s->digest, SEEN_KNOWN, s->slot);
			spa_seen.insert(key, &s->seen);
		}
		return spa_drop(ctx, s, REASON_SPA_BAD_MAC, s->slot);
	}
	if (!s->hit && s->path != SPA_PATH_TAGGED && !budget_take(slot, SPA_BUDGET, s->now)) {
		seen_fill(s, s->wire.mac, SEEN_KNOWN, slot); /* a copy later costs one HMAC */
		spa_seen.insert(key, &s->seen);
		return spa_drop(ctx, s, REASON_SPA_RATE_IDENTITY, slot);
	}
	if (!s->hit) {
		/* The NOEXIST insert settles CPUs racing on the same packet: one inserts, the others
		 * get -EEXIST. Any other error (no free LRU node) lets the packet on: this is flood
		 * protection, not the authority. */
		seen_fill(s, s->wire.mac, SEEN_QUEUED, slot);
		r = spa_seen.insert(key, &s->seen);
		if (r == -SG_EEXIST)
			return spa_drop(ctx, s, REASON_SPA_REPLAY_DUP, slot);
	}
	if (spa_queue(s, slot))
		return sg_reject(ctx, REASON_SPA_QUEUED);
	/* Never reached userspace: a copy sent later (a retransmission) is welcome, at the cost
	 * of one HMAC. */
	if (!s->hit) {
		e = spa_seen.lookup(key);
		if (e)
			e->state = SEEN_KNOWN;
		return sg_reject(ctx, REASON_SPA_RINGBUF_FULL);
	}
	r = REASON_SPA_RINGBUF_FULL;

restore:
	/* A known packet that did not get through: back to the state it had. */
	if (s->hit && s->prev != SEEN_QUEUED) {
		key = s->path == SPA_PATH_TAGGED ? (struct seen_key *)s->wire.body
						 : (struct seen_key *)s->wire.mac;
		e = spa_seen.lookup(key);
		if (e)
			e->state = s->prev;
	}
	return spa_drop(ctx, s, r, slot);
}

/* -- the closed disguise: xdp_reply ----------------------------------------------------------
 * Tail-called by sg_reject() (reply.h) once the drop is counted. It parses the packet again
 * (packet pointers do not survive a tail call), decides whether Linux would answer, and turns
 * the frame into that answer in place: XDP_TX. Every way out counts one more reason:
 * reply_rst, reply_icmp, reply_ratelimited or reply_skipped. */

/* The kernel's ICMP limits (net/ipv4/icmp.c): a global credit (icmp_global_allow: refilled at
 * icmp_msgs_per_sec, at most icmp_msgs_burst, not within 20 ms of the last refill; each
 * message sent consumes 0, 1 or 2 credits at random) and a per-destination token bucket
 * (inet_peer_xrlim_allow: one message per ratelimit, a burst of 6; a new destination starts
 * full). Only the destination-unreachable type is limited here, and only if its ratemask says
 * so. The races between CPUs are the kernel's too (it tolerates them the same way). */
static __always_inline int icmp_allow(const __u32 *peer, __u64 interval)
{
	struct icmp_global *g;
	struct icmp_peer *pe, fresh;
	__u32 zero = 0;
	__u64 now = bpf_ktime_get_ns(), delta, incr, cap = XRLIM_BURST_FACTOR * interval;
	__s64 credit;

	g = icmp_global.lookup(&zero);
	if (!g)
		return 0;
	if (g->credit <= 0) {
		delta = now - g->stamp;
		if (delta > 1000000000ULL)
			delta = 1000000000ULL;
		if (delta < ICMP_GLOBAL_MIN_NS)
			return 0;
		incr = ICMP_MSGS_PER_SEC * delta / 1000000000ULL;
		if (!incr)
			return 0;
		g->stamp = now;
		credit = g->credit + (__s64)incr;
		g->credit = credit > ICMP_MSGS_BURST ? ICMP_MSGS_BURST : credit;
	}
	pe = icmp_peers.lookup((struct addr_key *)peer);
	if (!pe) {
		fresh.tokens = cap - interval; /* inet_getpeer: rate_last 60 s ago, so a full burst */
		fresh.last = now;
		icmp_peers.update((struct addr_key *)peer, &fresh);
	} else {
		__u64 tokens = pe->tokens + (now - pe->last);

		pe->last = now;
		if (tokens > cap)
			tokens = cap;
		if (tokens < interval) {
			pe->tokens = tokens;
			return 0;
		}
		pe->tokens = tokens - interval;
	}
	__sync_fetch_and_add(&g->credit, -(__s64)(bpf_get_prandom_u32() % 3));
	return 1;
}

/* Read what the reply needs; 0 when Linux would not answer (not unicast, a RST, IP options
 * the kernel would echo). */
static __always_inline int reply_orig(struct pkt *p, void *end, struct sg_orig *o)
{
	__builtin_memset(o, 0, sizeof(*o));
	o->v6 = p->v6;
	if (p->v6) {
		struct ipv6hdr *ip6 = p->l3;
		__u32 *s = ip6->saddr.in6_u.u6_addr32, *d = ip6->daddr.in6_u.u6_addr32;

		if ((void *)(ip6 + 1) > end)
			return 0;
		__builtin_memcpy(o->src, s, 16);
		__builtin_memcpy(o->dst, d, 16);
		if (!sg_v6_unicast(o->src) || !sg_v6_unicast(o->dst))
			return 0;
		o->tos = sg_ntohl(*(__be32 *)ip6) >> 20;
		o->ip_len = sizeof(*ip6) + sg_ntohs(ip6->payload_len);
	} else {
		struct iphdr *ip = p->l3;

		if ((void *)(ip + 1) > end)
			return 0;
		if (ip->ihl != 5)
			return 0; /* options: the kernel echoes some (RR, TS, SRR), we send none */
		o->src[0] = ip->saddr;
		o->dst[0] = ip->daddr;
		if (!sg_v4_unicast(o->src[0]) || !sg_v4_unicast(o->dst[0]))
			return 0;
		o->tos = ip->tos;
		o->ip_len = sg_ntohs(ip->tot_len);
	}
	o->l4_len = p->l4_len;
	if (p->l4 + 4 > end)
		return 0;
	o->sport = *(__be16 *)p->l4;
	o->dport = *(__be16 *)(p->l4 + 2);
	return 1;
}

/* The L4 checksum is right (the kernel silently drops a segment whose checksum is wrong, and
 * never answers it: nmap --badsum tells a firewall that does). UDP over IPv4 may carry none. */
static __always_inline __u8 *reply_buf(void)
{
	__u32 zero = 0;
	struct reply_buf *b = reply_scratch.lookup(&zero);

	return b ? b->b : NULL;
}

static __always_inline int reply_csum_ok(struct xdp_md *ctx, struct pkt *p, void *end,
					 const struct sg_orig *o)
{
	__u8 *buf = reply_buf();
	__u64 s;
	int ok;

	if (!buf)
		return 0;

	if (p->proto == IPPROTO_UDP && !o->v6) {
		struct udphdr *uh = p->l4;

		if ((void *)(uh + 1) > end)
			return 0;
		if (uh->check == 0)
			return 1;
	}
	if (p->proto == IPPROTO_UDPLITE)
		return 1; /* partial coverage: not checked (see docs/xdp.md) */
	s = sg_sum_packet(ctx, p->l4 - (void *)(long)ctx->data, o->l4_len, buf, &ok);
	if (!ok)
		return 0;
	if (o->v6)
		s += sg_sum_addr6(o->src) + sg_sum_addr6(o->dst) + sg_htonl(o->l4_len) +
		     sg_htonl(p->proto);
	else
		s += (__u64)o->src[0] + o->dst[0] + sg_htons(o->l4_len) + sg_htons(p->proto);
	return sg_fold(s) == 0;
}

static __always_inline int reply_rst(struct xdp_md *ctx, struct pkt *p, __u32 l2len,
				     struct sg_orig *o)
{
	void *data, *end = (void *)(long)ctx->data_end;
	struct tcphdr *th = p->l4;
	__u32 hlen = o->v6 ? 60 : 40;
	__u64 s;

	if ((void *)(th + 1) > end)
		return verdict(REASON_REPLY_SKIPPED, XDP_DROP);
	if (th->rst)
		return verdict(REASON_REPLY_SKIPPED, XDP_DROP); /* never answer a reset */
	o->seq = th->seq;
	o->ack_seq = th->ack_seq;
	o->flags = ((__u8 *)th)[13];
	o->doff = th->doff;
	if (!reply_csum_ok(ctx, p, end, o))
		return verdict(REASON_REPLY_SKIPPED, XDP_DROP);

	/* The segment is at least as long as the RST (IP + 20 bytes of TCP): cut it to size. */
	/* bpf_xdp_get_buff_len: the verifier forbids arithmetic on data_end */
	if (bpf_xdp_adjust_tail(ctx, (int)(l2len + hlen) - (int)bpf_xdp_get_buff_len(ctx)))
		return verdict(REASON_REPLY_SKIPPED, XDP_DROP);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (l2len > SG_L2_MAX || data + sizeof(struct ethhdr) > end)
		return verdict(REASON_REPLY_SKIPPED, XDP_DROP);
	/* The verifier lost l2len's bound across the helper calls; clang knows it and would drop
	 * a plain mask: hide the value from clang, then mask. */
	asm volatile("" : "+r"(l2len));
	l2len &= 0x1f;
	sg_swap_macs(data);
	if (o->v6) {
		struct ipv6hdr *ip6 = data + l2len;

		asm volatile("" : "+r"(ip6)); /* one register for the check and the writes */
		if ((void *)(ip6 + 1) + sizeof(struct tcphdr) > end)
			return verdict(REASON_REPLY_SKIPPED, XDP_DROP);
		th = (void *)(ip6 + 1);
		/* tcp_v6_send_reset: the segment's traffic class without ECN, an auto flow label */
		sg_write_ip6(ip6, o, o->tos & ~3,
			     sg_flow_label(o->dst, o->src, (__u32)o->sport << 16 | o->dport), 20,
			     IPPROTO_TCP);
		sg_write_rst(th, o);
		s = sg_sum_addr6(o->src) + sg_sum_addr6(o->dst) + sg_htonl(20) + sg_htonl(IPPROTO_TCP);
	} else {
		struct iphdr *ip = data + l2len;

		asm volatile("" : "+r"(ip));
		if ((void *)(ip + 1) + sizeof(struct tcphdr) > end)
			return verdict(REASON_REPLY_SKIPPED, XDP_DROP);
		th = (void *)(ip + 1);
		/* ip_send_unicast_reply: the segment's TOS without ECN, DF, IP ID 0 */
		sg_write_ip4(ip, o, o->tos & ~3, 40, 0, 0x4000, IPPROTO_TCP);
		sg_write_rst(th, o);
		s = (__u64)o->src[0] + o->dst[0] + sg_htons(20) + sg_htons(IPPROTO_TCP);
	}
	th->check = sg_fold(s + sg_sum_words(th, 10));
	return verdict(REASON_REPLY_RST, XDP_TX);
}

/* Move the L2 header (Ethernet and its VLAN tags) from data + grow to data. */
static __always_inline int move_l2(void *data, void *end, __u32 l2len, __u32 grow)
{
	if (data + grow + SG_L2_MAX > end)
		return 0;
	if (grow == 28) {
		if (l2len == 14)
			__builtin_memcpy(data, data + 28, 14);
		else if (l2len == 18)
			__builtin_memcpy(data, data + 28, 18);
		else
			__builtin_memcpy(data, data + 28, 22);
	} else {
		if (l2len == 14)
			__builtin_memcpy(data, data + 48, 14);
		else if (l2len == 18)
			__builtin_memcpy(data, data + 48, 18);
		else
			__builtin_memcpy(data, data + 48, 22);
	}
	return 1;
}

static __always_inline int reply_unreach(struct xdp_md *ctx, struct pkt *p, __u32 l2len,
					 struct sg_orig *o)
{
	void *data, *end = (void *)(long)ctx->data_end;
	__u32 grow = o->v6 ? 48 : 28, quote;
	__u8 *buf = reply_buf();
	__u64 s;
	int ok;

	if (!buf)
		return verdict(REASON_REPLY_SKIPPED, XDP_DROP);

	if (!reply_csum_ok(ctx, p, end, o))
		return verdict(REASON_REPLY_SKIPPED, XDP_DROP);
	quote = o->ip_len;
	if (o->v6) {
		if (quote > ICMP6_QUOTE_MAX)
			quote = ICMP6_QUOTE_MAX;
		if (ICMP6_LIMIT_UNREACH && !icmp_allow(o->src, ICMP6_RATELIMIT_NS))
			return verdict(REASON_REPLY_RATELIMITED, XDP_DROP);
	} else {
		if (quote > ICMP4_QUOTE_MAX)
			quote = ICMP4_QUOTE_MAX;
		if ((ICMP_RATEMASK & (1 << ICMP_DEST_UNREACH)) &&
		    !icmp_allow(o->src, ICMP_RATELIMIT_NS))
			return verdict(REASON_REPLY_RATELIMITED, XDP_DROP);
	}
	/* Room in front for the new IP and ICMP headers; the original datagram stays where it is
	 * and becomes the quote. */
	if (bpf_xdp_adjust_head(ctx, -(int)grow))
		return verdict(REASON_REPLY_SKIPPED, XDP_DROP);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	asm volatile("" : "+r"(quote));
	quote &= 0x7ff; /* <= ICMP6_QUOTE_MAX, in a form the verifier keeps */
	if (!move_l2(data, end, l2len, grow))
		return verdict(REASON_REPLY_SKIPPED, XDP_DROP);
	if (bpf_xdp_adjust_tail(ctx, (int)(l2len + grow + quote) - (int)bpf_xdp_get_buff_len(ctx)))
		return verdict(REASON_REPLY_SKIPPED, XDP_DROP);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (l2len > SG_L2_MAX || data + sizeof(struct ethhdr) > end)
		return verdict(REASON_REPLY_SKIPPED, XDP_DROP);
	/* The verifier lost l2len's bound across the helper calls; clang knows it and would drop
	 * a plain mask: hide the value from clang, then mask. */
	asm volatile("" : "+r"(l2len));
	l2len &= 0x1f;
	sg_swap_macs(data);
	if (o->v6) {
		struct ipv6hdr *ip6 = data + l2len;
		struct icmp6hdr *ic;

		asm volatile("" : "+r"(ip6));
		ic = (void *)(ip6 + 1);
		if ((void *)(ic + 1) > end)
			return verdict(REASON_REPLY_SKIPPED, XDP_DROP);
		s = sg_sum_packet(ctx, l2len + 48, quote, buf, &ok);
		if (!ok)
			return verdict(REASON_REPLY_SKIPPED, XDP_DROP);
		/* icmp6_send: traffic class 0, an auto flow label */
		sg_write_ip6(ip6, o, 0, sg_flow_label(o->dst, o->src, IPPROTO_ICMPV6), 8 + quote,
			     IPPROTO_ICMPV6);
		__builtin_memset(ic, 0, sizeof(*ic));
		ic->icmp6_type = ICMPV6_DEST_UNREACH;
		ic->icmp6_code = ICMPV6_PORT_UNREACH;
		s += sg_sum_addr6(o->src) + sg_sum_addr6(o->dst) + sg_htonl(8 + quote) +
		     sg_htonl(IPPROTO_ICMPV6) + sg_sum_words(ic, 4);
		ic->icmp6_cksum = sg_fold(s);
	} else {
		struct iphdr *ip = data + l2len;
		struct icmphdr *ic;

		asm volatile("" : "+r"(ip));
		ic = (void *)(ip + 1);
		if ((void *)(ic + 1) > end)
			return verdict(REASON_REPLY_SKIPPED, XDP_DROP);
		s = sg_sum_packet(ctx, l2len + 28, quote, buf, &ok);
		if (!ok)
			return verdict(REASON_REPLY_SKIPPED, XDP_DROP);
		/* icmp_send: TOS = the original's TOS bits | precedence internetwork control, no DF,
		 * an IP ID from the kernel's per-destination generator (ours: random) */
		sg_write_ip4(ip, o, (o->tos & SG_IPTOS_TOS_MASK) | SG_IPTOS_PREC_INTERNETCONTROL,
			     28 + quote, (__u16)bpf_get_prandom_u32(), 0, IPPROTO_ICMP);
		__builtin_memset(ic, 0, sizeof(*ic));
		ic->type = ICMP_DEST_UNREACH;
		ic->code = ICMP_PORT_UNREACH;
		ic->checksum = sg_fold(s + sg_sum_words(ic, 4));
	}
	return verdict(REASON_REPLY_ICMP, XDP_TX);
}

int xdp_reply(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct cursor c = {.pos = data, .end = end};
	struct ethhdr *eth = data;
	struct sg_orig o;
	struct pkt p;
	__u32 l2len;

	if (parse_packet(&c, &p) != PARSE_OK || p.first_frag)
		return verdict(REASON_REPLY_SKIPPED, XDP_DROP); /* the kernel answers datagrams */
	if ((void *)(eth + 1) > end || (eth->h_dest[0] & 1))
		return verdict(REASON_REPLY_SKIPPED, XDP_DROP); /* not PACKET_HOST: no answer */
	l2len = p.l3 - data;
	if (l2len > SG_L2_MAX || !reply_orig(&p, end, &o))
		return verdict(REASON_REPLY_SKIPPED, XDP_DROP);
	if (p.proto == IPPROTO_TCP)
		return reply_rst(ctx, &p, l2len, &o);
	return reply_unreach(ctx, &p, l2len, &o);
}
