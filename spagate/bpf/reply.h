/* spagate disguise: what a dropped packet looks like from outside (docs/xdp.md, "Disguise").
 *
 * sg_reject(ctx, reason) is the one way a protected-port or SPA-port drop leaves the program.
 * It counts the reason; with DISGUISE_CLOSED it tail-calls xdp_reply (spa_progs[PROG_SLOT_REPLY],
 * gate.c), which answers as Linux answers for a port nobody listens on: a TCP RST (the rules
 * of tcp_v4_send_reset / tcp_v6_send_reset: RFC 9293 3.10.7.1) or an ICMP / ICMPv6 port
 * unreachable quoting the original (icmp_send / icmp6_send), rate-limited like the kernel, sent
 * back on the interface it came from with XDP_TX: MACs swapped, VLAN tags kept.
 *
 * This header holds the pure parts: checksums and the header writers. No map here: gate.c
 * defines verdict() and sg_reply_call() before including it (bcc rewrites map calls only in
 * the main source file).
 */
#ifndef SPAGATE_REPLY_H
#define SPAGATE_REPLY_H

#include "parsing.h"

#define SG_L2_MAX (14 + 4 * SG_VLAN_MAX) /* Ethernet and the VLAN tags we walk */
#define SG_SUM_MAX 1500                  /* longest L4 segment whose checksum is checked */
#define SG_TCP_RST 0x04
#define SG_TCP_ACK 0x10
#define SG_IPTOS_TOS_MASK 0x1e
#define SG_IPTOS_PREC_INTERNETCONTROL 0xc0

/* Count reason and drop; in the closed disguise answer first. The tail call returns only when
 * xdp_reply is missing. */
static __always_inline int sg_reject(struct xdp_md *ctx, __u32 reason)
{
	verdict(reason, XDP_DROP);
#if DISGUISE_CLOSED
	sg_reply_call(ctx);
	return verdict(REASON_REPLY_FAILED, XDP_DROP);
#else
	return XDP_DROP;
#endif
}

/* One's complement sum, folded and inverted (RFC 1071). Words are summed as they lie in
 * memory: the result stored as is is the checksum in network order. */
static __always_inline __u16 sg_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

static __always_inline __u64 sg_sum_words(const void *p, __u32 words)
{
	const __u16 *w = p;
	__u64 s = 0;

#pragma unroll
	for (__u32 i = 0; i < 30; i++) /* headers only: at most 60 bytes */
		if (i < words)
			s += w[i];
	return s;
}

/* One's complement sum of len packet bytes from offset off (len <= SG_SUM_MAX), through buf
 * (a per-CPU map value of SG_SUM_MAX + 4 bytes): copied in 512-byte chunks, each summed by
 * bpf_csum_diff. No loop over the packet: walked once per parse path, a loop would exhaust
 * the verifier. *ok = 0 when the packet is shorter. */
static __always_inline __u64 sg_sum_packet(struct xdp_md *ctx, __u32 off, __u32 len, __u8 *buf,
					   int *ok)
{
	__s64 s = 0;
	__u32 done = 0;

	*ok = 0;
	if (len > SG_SUM_MAX)
		return 0;
#pragma unroll
	for (int i = 0; i < (SG_SUM_MAX + 511) / 512; i++) {
		__u32 n = len - done, n4;

		if (n > 512)
			n = 512;
		asm volatile("" : "+r"(n)); /* then mask: a bound the verifier sees (1..1023) */
		n &= 0x3ff;
		if (n == 0)
			break;
		/* Kernels before 6.8 do not learn n >= 1 from the test above, and the load size
		 * must not be 0 (ARG_CONST_SIZE): hide n from clang again, then compute a value
		 * the verifier bounds to 1..1024 itself. */
		asm volatile("" : "+r"(n));
		n = ((n - 1) & 0x3ff) + 1;
		n4 = (n + 3) & 0x3fc; /* bpf_csum_diff takes whole words: zero the pad first */
		*(__u32 *)(buf + ((n4 - 4) & 0x1fc)) = 0;
		if (bpf_xdp_load_bytes(ctx, off + done, buf, n) < 0)
			return 0;
		s = bpf_csum_diff(NULL, 0, (__be32 *)buf, n4, (__u32)s);
		if (s < 0)
			return 0;
		done += n;
	}
	*ok = 1;
	return (__u32)s;
}

static __always_inline __u64 sg_sum_addr6(const __u32 *a)
{
	return (__u64)a[0] + a[1] + a[2] + a[3];
}

/* Not a unicast source or destination: the kernel answers none of these. */
static __always_inline int sg_v4_unicast(__u32 a)
{
	__u32 h = sg_ntohl(a);

	return h != 0 && h != 0xffffffff && (h >> 28) != 0xe && (h >> 24) != 127;
}

static __always_inline int sg_v6_unicast(const __u32 *a)
{
	if ((sg_ntohl(a[0]) >> 24) == 0xff)
		return 0; /* multicast */
	if (a[0] == 0 && a[1] == 0 && a[2] == 0 && (a[3] == 0 || a[3] == sg_htonl(1)))
		return 0; /* :: and ::1 */
	if (a[0] == 0 && a[1] == 0 && a[2] == IPV6_MAPPED_PREFIX_W2_BE)
		return 0; /* ::ffff:a.b.c.d: ipv6_rcv drops it */
	return 1;
}

/* A stable per-flow IPv6 flow label, like the kernel's auto flow label (a keyed hash of the
 * flow; ours is keyed by REPLY_FLOW_SECRET, random per load). Never 0. */
static __always_inline __u32 sg_flow_label(const __u32 *s, const __u32 *d, __u32 ports)
{
	__u32 h = REPLY_FLOW_SECRET;

#pragma unroll
	for (int i = 0; i < 4; i++) {
		h ^= s[i];
		h *= 0x9e3779b1;
		h ^= d[i];
		h = (h ^ (h >> 15)) * 0x85ebca77;
	}
	h ^= ports;
	h = (h ^ (h >> 13)) * 0xc2b2ae3d;
	h ^= h >> 16;
	h &= 0xfffff;
	return h ? h : 1;
}

/* Swap the Ethernet addresses in place (the VLAN tags after them stay). */
static __always_inline void sg_swap_macs(struct ethhdr *eth)
{
	__u8 tmp[ETH_ALEN];

	__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
}

/* What a reply needs from the packet, read before the packet is resized. */
struct sg_orig {
	__u32 src[4]; /* IPv4: src[0] */
	__u32 dst[4];
	__u32 seq, ack_seq;
	__u32 l4_len;  /* the IP header's L4 bytes */
	__u32 ip_len;  /* the whole datagram: IP header(s) + L4 */
	__u16 sport, dport; /* network order */
	__u8 tos;      /* IPv4 TOS / IPv6 traffic class */
	__u8 flags;
	__u8 doff;
	__u8 v6;
};

static __always_inline void sg_write_ip4(struct iphdr *ip, const struct sg_orig *o, __u8 tos,
					 __u16 tot, __u16 id, __u16 frag, __u8 proto)
{
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = tos;
	ip->tot_len = sg_htons(tot);
	ip->id = id;
	ip->frag_off = sg_htons(frag);
	ip->ttl = REPLY_TTL;
	ip->protocol = proto;
	ip->check = 0;
	ip->saddr = o->dst[0];
	ip->daddr = o->src[0];
	ip->check = sg_fold(sg_sum_words(ip, 10));
}

static __always_inline void sg_write_ip6(struct ipv6hdr *ip6, const struct sg_orig *o, __u8 tclass,
					 __u32 label, __u16 plen, __u8 next)
{
	*(__be32 *)ip6 = sg_htonl(6U << 28 | (__u32)tclass << 20 | label);
	ip6->payload_len = sg_htons(plen);
	ip6->nexthdr = next;
	ip6->hop_limit = REPLY_HOP_LIMIT;
	__builtin_memcpy(&ip6->saddr, o->dst, 16);
	__builtin_memcpy(&ip6->daddr, o->src, 16);
}

/* The RST of tcp_v4_send_reset / tcp_v6_send_reset for segment o: to an ACK, seq = its ack
 * number and no ACK; otherwise seq 0, ACK of seq + SYN + FIN + payload. Window 0, no options. */
static __always_inline void sg_write_rst(struct tcphdr *th, const struct sg_orig *o)
{
	__u32 *w = (__u32 *)th;

	th->source = o->dport;
	th->dest = o->sport;
	if (o->flags & SG_TCP_ACK) {
		th->seq = o->ack_seq;
		th->ack_seq = 0;
		w[3] = 0;
		th->doff = 5;
		th->rst = 1;
	} else {
		__u32 len = o->l4_len - o->doff * 4;

		len += (o->flags & 0x02) ? 1 : 0; /* SYN */
		len += (o->flags & 0x01) ? 1 : 0; /* FIN */
		th->seq = 0;
		th->ack_seq = sg_htonl(sg_ntohl(o->seq) + len);
		w[3] = 0;
		th->doff = 5;
		th->rst = 1;
		th->ack = 1;
	}
	th->window = 0;
	th->check = 0;
	th->urg_ptr = 0;
}

#endif
