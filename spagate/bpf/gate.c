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

/* SPA port, first half (in xdp_gate): per-source bucket, then hand over to xdp_spa_verify. */
static __always_inline int spa(struct xdp_md *ctx, struct pkt *p, struct udphdr *uh, void *end)
{
	struct spa_scratch *s;
	__u32 zero = 0;
	__u64 now, tat, *stored;
	__u16 ulen;

	if (p->first_frag)
		return verdict(REASON_FRAGMENT_DROPPED, XDP_DROP); /* SPA packets are never fragmented */
	ulen = sg_ntohs(uh->len);
	if ((void *)(uh + 1) > end || ulen < sizeof(*uh) || ulen > p->l4_len)
		return verdict(REASON_MALFORMED, XDP_DROP);
	/* ::ffff:a.b.c.d is never a source on the wire: userspace would take the sender for that
	 * IPv4 host (its bucket, its source match). Before the bucket: it must not charge that
	 * host's tokens either. */
	if (p->mapped_src)
		return verdict(REASON_MALFORMED, XDP_DROP);
	s = spa_scratch.lookup(&zero);
	if (!s)
		return verdict(REASON_SPA_TAIL_CALL_FAILED, XDP_DROP);

	/* Per source: GCRA. tat = when the bucket would be full again; over tau = over burst.
	 * Charged before the MAC check: one source cannot make us hash at line rate. The bucket
	 * of a native IPv6 source is its /64: one holder has 2^64 addresses for free. */
	copy_addr(s->src, p, 0);
	__builtin_memcpy(s->bucket, s->src, 16);
	if (p->v6) {
		__u32 *w = (__u32 *)s->bucket;

		w[2] = 0;
		w[3] = 0;
	}
	now = now_ns();
	stored = spa_rate.lookup((struct addr_key *)s->bucket);
	if (stored) {
		tat = *stored;
		if (tat < now)
			tat = now;
		if (tat - now > SPA_TAU_NS)
			return verdict(REASON_SPA_RATE_SOURCE, XDP_DROP);
		*stored = tat + SPA_INTERVAL_NS;
	} else {
		tat = now + SPA_INTERVAL_NS;
		spa_rate.update((struct addr_key *)s->bucket, &tat);
	}

	copy_addr(s->dst, p, 1);
	s->now = now;
	s->off = (void *)(uh + 1) - (void *)(long)ctx->data;
	s->ifindex = ctx->ingress_ifindex;
	s->sport = sg_ntohs(uh->source);
	s->dport = sg_ntohs(uh->dest);
	s->len = ulen - sizeof(*uh);
	s->pad = 0;
	/* The MAC check (~13k instructions per key) lives in its own program: inlined here the
	 * verifier would walk it once per parse_packet() path and run out of budget. */
	spa_progs.call(ctx, 0);
	return verdict(REASON_SPA_TAIL_CALL_FAILED, XDP_DROP);
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

/* SPA port, second half: tail-called from spa() with spa_scratch[0] filled. Size, MAC against
 * the key ring, MAC seen before (replay flood), then the global budget (so it only ever counts
 * distinct MAC-valid packets), then the ring record. Always XDP_DROP: nothing answers on the
 * SPA port. */
int xdp_spa_verify(struct xdp_md *ctx)
{
	struct spa_scratch *s;
	struct spa_event *e;
	struct mac_key *seen;
	struct budget *b;
	__u32 zero = 0;
	int key, r;

	s = spa_scratch.lookup(&zero);
	if (!s)
		return verdict(REASON_SPA_TAIL_CALL_FAILED, XDP_DROP);
	if (s->len != SPA_PACKET_SIZE)
		return verdict(REASON_SPA_BAD_SIZE, XDP_DROP);
	if (bpf_xdp_load_bytes(ctx, s->off, &s->wire, sizeof(s->wire)) < 0)
		return verdict(REASON_MALFORMED, XDP_DROP); /* cannot happen: xdp_gate checked len */
	key = spa_mac_any(&s->wire);
	if (key < 0)
		return verdict(REASON_SPA_BAD_MAC, XDP_DROP);

	/* One captured packet replayed from many sources: each copy passes its own bucket and
	 * the MAC, so without this it would spend the global budget. Keyed by the MAC's first
	 * 16 bytes (a map value pointer is a valid key). Lookup first: a duplicate then costs
	 * one lookup and evicts nothing (an LRU insert may). The NOEXIST insert settles CPUs
	 * racing on the same MAC: one inserts, the others get -EEXIST. Any other insert error
	 * (no free LRU node) lets the packet on: this is flood protection, not the authority. */
	seen = (struct mac_key *)s->wire.mac;
	if (spa_seen.lookup(seen))
		return verdict(REASON_SPA_REPLAY_DUP, XDP_DROP);
	r = spa_seen.insert(seen, &s->now);
	if (r == -SG_EEXIST)
		return verdict(REASON_SPA_REPLAY_DUP, XDP_DROP);

	/* Global: fixed one-second window. Racing resets between CPUs only blur the edge. A
	 * packet that does not reach userspace is forgotten again, so a copy sent later (a
	 * retransmission) is not taken for a replay. */
	b = spa_budget.lookup(&zero);
	if (!b) {
		spa_seen.delete(seen);
		return verdict(REASON_SPA_RATE_GLOBAL, XDP_DROP);
	}
	if (s->now - b->window_start >= SPA_BUDGET_WINDOW_NS) {
		b->window_start = s->now;
		b->count = 0;
	}
	if (__sync_fetch_and_add(&b->count, 1) >= SPA_BUDGET) {
		spa_seen.delete(seen);
		return verdict(REASON_SPA_RATE_GLOBAL, XDP_DROP);
	}

	e = spa_events.ringbuf_reserve(sizeof(struct spa_event));
	if (!e) {
		spa_seen.delete(seen);
		return verdict(REASON_SPA_RINGBUF_FULL, XDP_DROP);
	}
	__builtin_memcpy(e->src, s->src, 16);
	__builtin_memcpy(e->dst, s->dst, 16);
	e->sport = s->sport;
	e->dport = s->dport;
	e->ifindex = s->ifindex;
	e->len = SPA_PACKET_SIZE;
	e->copied = SPA_PACKET_SIZE;
	e->key = key;
	e->ts = bpf_ktime_get_ns(); /* not now_ns(): the coarse clock is too coarse for latency */
	__builtin_memcpy(e->payload, &s->wire, SPA_PACKET_SIZE);
	spa_events.ringbuf_submit(e, 0);
	return verdict(REASON_SPA_QUEUED, XDP_DROP);
}
