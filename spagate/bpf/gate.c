/* spagate XDP gate. Verdicts (docs/xdp.md has the full table):
 *   SPA port (UDP)   per-source bucket, tail call to xdp_spa_verify: size, MAC (key ring),
 *                    MAC seen (spa_seen), global budget, copy to spa_events; always XDP_DROP
 *   protected TCP    SYN: allow map / static_allow; other segments: kernel socket, allow, static
 *   protected UDP    live flow in udp_flows, allow map (creates the flow), static_allow
 *   everything else  XDP_PASS untouched
 * Defaults and compile-time options (-D): consts.h (SPA_PORT, SPA_INTERVAL_NS, SPA_BURST,
 * SPA_BUDGET, UDP_IDLE_NS, capacities), plus SPAGATE_COARSE_CLOCK. Maps: maps.h. Parsing:
 * parsing.h.
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
static __always_inline int spa_drop(struct spa_scratch *s, __u32 reason, __u32 key)
{
	if (reason == REASON_SPA_BAD_MAC || reason == REASON_SPA_TAG_BAD ||
	    reason == REASON_SPA_REPLAY_DUP || reason == REASON_SPA_RATE_SOURCE ||
	    reason == REASON_SPA_RATE_IDENTITY || reason == REASON_SPA_UNTAGGED_BUDGET)
		spa_sample(s, reason, key); /* reason is a constant here: the test folds away */
	return verdict(reason, XDP_DROP);
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
		return verdict(REASON_MALFORMED, XDP_DROP);
	/* ::ffff:a.b.c.d is never a source on the wire: userspace would take the sender for that
	 * IPv4 host (its bucket, its source match). Before anything is charged. */
	if (p->mapped_src)
		return verdict(REASON_MALFORMED, XDP_DROP);
	if (ulen != sizeof(*uh) + SPA_PACKET_SIZE)
		return verdict(REASON_SPA_BAD_SIZE, XDP_DROP);
	if ((void *)(pl + SPA_PACKET_SIZE) > end)
		return verdict(REASON_MALFORMED, XDP_DROP); /* ulen <= l4_len: for the verifier */
	s = spa_scratch.lookup(&zero);
	if (!s)
		return verdict(REASON_SPA_TAIL_CALL_FAILED, XDP_DROP);

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
			return verdict(REASON_SPA_UNTAGGED_REFUSED, XDP_DROP);
		/* Over budget: dropped before the tail call (the steady state of a junk flood). */
		if (SPA_UNTAGGED_MODE == SPA_UNTAGGED_BOUNDED &&
		    budget_full(SPA_BUDGET_UNTAGGED, SPA_UNTAGGED_BUDGET, s->now))
			return spa_drop(s, REASON_SPA_UNTAGGED_BUDGET, SPA_KEY_NONE);
	}
	/* The checks with hashes (~13k instructions per HMAC) live in their own program: inlined
	 * here the verifier would walk them once per parse_packet() path and run out of budget. */
	spa_progs.call(ctx, 0);
	return verdict(REASON_SPA_TAIL_CALL_FAILED, XDP_DROP);
}

/* fwknop port: its own per-source bucket, its own budget, then the whole payload to
 * fwknop_events; always XDP_DROP (nothing answers). No MAC here: fwknop's HMAC covers a base64
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
		return verdict(REASON_MALFORMED, XDP_DROP);
	if (p->mapped_src)
		return verdict(REASON_MALFORMED, XDP_DROP);
	len = ulen - sizeof(*uh);
	if (len < FWKNOP_MIN_PAYLOAD || len > FWKNOP_MAX_PAYLOAD)
		return verdict(REASON_FWKNOP_BAD_SIZE, XDP_DROP);
	source_bucket(bucket.addr, p);
	now = now_ns();
	stored = fwknop_rate.lookup(&bucket);
	if (stored) {
		tat = *stored;
		if (tat < now)
			tat = now;
		if (tat - now > SPA_TAU_NS)
			return verdict(REASON_FWKNOP_RATE_SOURCE, XDP_DROP);
		*stored = tat + SPA_INTERVAL_NS;
	} else {
		tat = now + SPA_INTERVAL_NS;
		fwknop_rate.update(&bucket, &tat);
	}
	b = fwknop_budget.lookup(&zero);
	if (!b)
		return verdict(REASON_FWKNOP_RATE_GLOBAL, XDP_DROP);
	if (now - b->window_start >= SPA_BUDGET_WINDOW_NS) {
		b->window_start = now;
		b->count = 0;
	}
	if (__sync_fetch_and_add(&b->count, 1) >= FWKNOP_BUDGET)
		return verdict(REASON_FWKNOP_RATE_GLOBAL, XDP_DROP);
	e = fwknop_events.ringbuf_reserve(sizeof(struct fwknop_event));
	if (!e)
		return verdict(REASON_FWKNOP_RINGBUF_FULL, XDP_DROP);
	/* len is bounded above (the check above): the verifier accepts it as the copy size. */
	if (bpf_xdp_load_bytes(ctx, (void *)(uh + 1) - (void *)(long)ctx->data, e->payload,
			       len) < 0) {
		fwknop_events.ringbuf_discard(e, 0);
		return verdict(REASON_MALFORMED, XDP_DROP);
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
	return verdict(REASON_FWKNOP_QUEUED, XDP_DROP);
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
		return verdict(REASON_TCP_DROPPED_NEW, XDP_DROP);
	return verdict(REASON_TCP_DROPPED_STRAY, XDP_DROP);
}

static __always_inline int udp(struct pkt *p, struct udphdr *uh, void *end, __u16 sport,
			       __u16 dport)
{
	struct flow_key fk;
	struct allow_key k;
	__u64 now = 0, *last;
	__u16 ulen;

	if ((void *)(uh + 1) > end || p->l4_len < sizeof(*uh))
		return verdict(p->first_frag ? REASON_FRAGMENT_DROPPED : REASON_MALFORMED, XDP_DROP);
	ulen = sg_ntohs(uh->len);
	if (ulen < sizeof(*uh) || (!p->first_frag && ulen > p->l4_len))
		return verdict(REASON_MALFORMED, XDP_DROP);
	if (p->mapped_src)
		return verdict(REASON_UDP_DROPPED, XDP_DROP);

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
	return verdict(REASON_UDP_DROPPED, XDP_DROP);
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
		return verdict(r, XDP_DROP);
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

	slot = PROTECTED_SLOT(p.proto == IPPROTO_UDP, dport);
	word = protected.lookup(&slot);
	if (!word || !(*word & (1ULL << (dport & 63))))
		return verdict(REASON_PASS_UNRELATED, XDP_PASS);
	if (p.proto == IPPROTO_TCP)
		return tcp(ctx, &p, p.l4, end, dport);
	return udp(&p, p.l4, end, sport, dport);
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
 * then spa_seen and the ring record. Always XDP_DROP: nothing answers on the SPA port. */
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
		return verdict(REASON_SPA_TAIL_CALL_FAILED, XDP_DROP);
	if (bpf_xdp_load_bytes(ctx, s->off, &s->wire, sizeof(s->wire)) < 0)
		return verdict(REASON_MALFORMED, XDP_DROP); /* cannot happen: xdp_gate checked len */

	if (s->path == SPA_PATH_TAGGED) {
		if (!spa_tag_ok(s->k0, s->k1, &s->wire))
			return spa_drop(s, REASON_SPA_TAG_BAD, s->slot);
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
			return spa_drop(s, REASON_SPA_BAD_MAC, e->slot); /* known right MAC: not this */
		prev = e->state;
		if (prev == SEEN_QUEUED) {
			/* require-source-match: a copy from another source may be the real one (the
			 * first may be an on-path copy sent from elsewhere); a few may pass. */
			if (!SPA_SOURCE_MATCH || same16(e->src, s->src) ||
			    same16(e->alt_src, s->src) || e->alt >= SPA_SEEN_ALT_MAX ||
			    __sync_fetch_and_add(&e->alt, 1) >= SPA_SEEN_ALT_MAX)
				return spa_drop(s, REASON_SPA_REPLAY_DUP, e->slot);
			__builtin_memcpy(e->alt_src, s->src, 16); /* its own copies: duplicates */
		} else if (prev == SEEN_EXPECT && !same16(e->src, s->src)) {
			return spa_drop(s, REASON_SPA_REPLAY_DUP, e->slot);
		} else if (__sync_val_compare_and_swap(&e->state, prev, SEEN_QUEUED) != prev) {
			return spa_drop(s, REASON_SPA_REPLAY_DUP, e->slot); /* another CPU took it */
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
			return spa_drop(s, REASON_SPA_RATE_SOURCE, SPA_KEY_NONE);
		if (SPA_UNTAGGED_MODE == SPA_UNTAGGED_BOUNDED &&
		    !budget_take(SPA_BUDGET_UNTAGGED, SPA_UNTAGGED_BUDGET, s->now))
			return spa_drop(s, REASON_SPA_UNTAGGED_BUDGET, SPA_KEY_NONE);
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
			return spa_drop(s, REASON_SPA_BAD_MAC, SPA_KEY_NONE);
		count = spa_key_count_get();
		if (count && s->slot < *count) {
			/* A valid tag, a wrong MAC: a captured packet with its MAC changed. Remember
			 * the right MAC (the digest of the one key tried): further variants are
			 * dropped unhashed. */
			seen_fill(s, s->digest, SEEN_KNOWN, s->slot);
			spa_seen.insert(key, &s->seen);
		}
		return spa_drop(s, REASON_SPA_BAD_MAC, s->slot);
	}
	if (!s->hit && s->path != SPA_PATH_TAGGED && !budget_take(slot, SPA_BUDGET, s->now)) {
		seen_fill(s, s->wire.mac, SEEN_KNOWN, slot); /* a copy later costs one HMAC */
		spa_seen.insert(key, &s->seen);
		return spa_drop(s, REASON_SPA_RATE_IDENTITY, slot);
	}
	if (!s->hit) {
		/* The NOEXIST insert settles CPUs racing on the same packet: one inserts, the others
		 * get -EEXIST. Any other error (no free LRU node) lets the packet on: this is flood
		 * protection, not the authority. */
		seen_fill(s, s->wire.mac, SEEN_QUEUED, slot);
		r = spa_seen.insert(key, &s->seen);
		if (r == -SG_EEXIST)
			return spa_drop(s, REASON_SPA_REPLAY_DUP, slot);
	}
	if (spa_queue(s, slot))
		return verdict(REASON_SPA_QUEUED, XDP_DROP);
	/* Never reached userspace: a copy sent later (a retransmission) is welcome, at the cost
	 * of one HMAC. */
	if (!s->hit) {
		e = spa_seen.lookup(key);
		if (e)
			e->state = SEEN_KNOWN;
		return verdict(REASON_SPA_RINGBUF_FULL, XDP_DROP);
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
	return spa_drop(s, r, slot);
}
