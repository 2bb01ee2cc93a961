/* spagate XDP gate. Verdicts (docs/xdp.md has the full table):
 *   SPA port (UDP)   per-source bucket, tail call to xdp_spa_verify: size, MAC (key ring),
 *                    MAC seen (spa_seen), global budget, copy to spa_events; always XDP_DROP
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
		return sg_reject(ctx, REASON_MALFORMED);
	s = spa_scratch.lookup(&zero);
	if (!s)
		return sg_reject(ctx, REASON_SPA_TAIL_CALL_FAILED);

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
			return sg_reject(ctx, REASON_SPA_RATE_SOURCE);
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
	spa_progs.call(ctx, PROG_SLOT_SPA_VERIFY);
	return sg_reject(ctx, REASON_SPA_TAIL_CALL_FAILED);
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

/* SPA port, second half: tail-called from spa() with spa_scratch[0] filled. Size, MAC against
 * the key ring, MAC seen before (replay flood), then the global budget (so it only ever counts
 * distinct MAC-valid packets), then the ring record. Always dropped through sg_reject(): the
 * SPA port looks like any port nobody listens on (silent, or port unreachable if closed). */
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
		return sg_reject(ctx, REASON_SPA_TAIL_CALL_FAILED);
	if (s->len != SPA_PACKET_SIZE)
		return sg_reject(ctx, REASON_SPA_BAD_SIZE);
	if (bpf_xdp_load_bytes(ctx, s->off, &s->wire, sizeof(s->wire)) < 0)
		return sg_reject(ctx, REASON_MALFORMED); /* cannot happen: xdp_gate checked len */
	key = spa_mac_any(&s->wire);
	if (key < 0)
		return sg_reject(ctx, REASON_SPA_BAD_MAC);

	/* One captured packet replayed from many sources: each copy passes its own bucket and
	 * the MAC, so without this it would spend the global budget. Keyed by the MAC's first
	 * 16 bytes (a map value pointer is a valid key). Lookup first: a duplicate then costs
	 * one lookup and evicts nothing (an LRU insert may). The NOEXIST insert settles CPUs
	 * racing on the same MAC: one inserts, the others get -EEXIST. Any other insert error
	 * (no free LRU node) lets the packet on: this is flood protection, not the authority. */
	seen = (struct mac_key *)s->wire.mac;
	if (spa_seen.lookup(seen))
		return sg_reject(ctx, REASON_SPA_REPLAY_DUP);
	r = spa_seen.insert(seen, &s->now);
	if (r == -SG_EEXIST)
		return sg_reject(ctx, REASON_SPA_REPLAY_DUP);

	/* Global: fixed one-second window. Racing resets between CPUs only blur the edge. A
	 * packet that does not reach userspace is forgotten again, so a copy sent later (a
	 * retransmission) is not taken for a replay. */
	b = spa_budget.lookup(&zero);
	if (!b) {
		spa_seen.delete(seen);
		return sg_reject(ctx, REASON_SPA_RATE_GLOBAL);
	}
	if (s->now - b->window_start >= SPA_BUDGET_WINDOW_NS) {
		b->window_start = s->now;
		b->count = 0;
	}
	if (__sync_fetch_and_add(&b->count, 1) >= SPA_BUDGET) {
		spa_seen.delete(seen);
		return sg_reject(ctx, REASON_SPA_RATE_GLOBAL);
	}

	e = spa_events.ringbuf_reserve(sizeof(struct spa_event));
	if (!e) {
		spa_seen.delete(seen);
		return sg_reject(ctx, REASON_SPA_RINGBUF_FULL);
	}
	__builtin_memcpy(e->src, s->src, 16);
	__builtin_memcpy(e->dst, s->dst, 16);
	e->sport = s->sport;
	e->dport = s->dport;
	e->ifindex = s->ifindex;
	e->len = SPA_PACKET_SIZE;
	e->copied = SPA_PACKET_SIZE;
	e->key = key;
	__builtin_memcpy(e->payload, &s->wire, SPA_PACKET_SIZE);
	spa_events.ringbuf_submit(e, 0);
	return sg_reject(ctx, REASON_SPA_QUEUED); /* closed: a port unreachable, as for any knock */
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
