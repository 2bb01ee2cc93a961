/* spagate packet parsing: small always-inline parse_<header>() helpers around a cursor.
 *
 * Contract of every helper (after xdp-tutorial's parsing_helpers.h): it checks that the
 * header it reads lies entirely inside the packet before touching it (the verifier rejects any
 * packet access not preceded by such a check), advances the cursor past it, and returns what
 * comes next (an EtherType or a protocol) or PARSE_OK; a packet that ends early or lies gives
 * a verdict reason (reasons.h) instead. parse_packet() is the dispatcher xdp_gate calls.
 * Nothing here touches a map.
 */
#ifndef SPAGATE_PARSING_H
#define SPAGATE_PARSING_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>
#include <uapi/linux/icmp.h>
#include <uapi/linux/icmpv6.h>

#include "consts.h"
#include "reasons.h"

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define sg_ntohs(x) ((__u16)__builtin_bswap16((__u16)(x)))
#define sg_htons(x) ((__u16)__builtin_bswap16((__u16)(x)))
#define sg_htonl(x) ((__u32)__builtin_bswap32((__u32)(x)))
#define sg_ntohl(x) ((__u32)__builtin_bswap32((__u32)(x)))
#else
#define sg_ntohs(x) ((__u16)(x))
#define sg_htons(x) ((__u16)(x))
#define sg_htonl(x) ((__u32)(x))
#define sg_ntohl(x) ((__u32)(x))
#endif

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

#define PARSE_OK (-1) /* the header was fine: go on (any other value is a verdict reason) */
#define ETH_P_TOO_MANY_TAGS 0xffff /* parse_ethernet(): more VLAN tags than we walk */
#define IPV6_MAPPED_PREFIX_W2_BE sg_htonl(0x0000ffff) /* third word of ::ffff:a.b.c.d */

/* Not in uapi headers: an 802.1Q/802.1ad tag and the IPv6 fragment header. */
struct sg_vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

struct sg_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-byte units << 3 | M flag in bit 0 */
	__be32 identification;
};

struct cursor {
	void *pos;
	void *end;
};

/* What parse_packet() found: L3 and the first 4 bytes of L4 are inside the packet. */
struct pkt {
	void *l3;        /* IPv4 or IPv6 header (already bounds-checked) */
	void *l4;        /* TCP/UDP header (only the first 4 bytes checked by parse) */
	__u32 l4_len;    /* L4 bytes the IP header announces (for a first fragment: this fragment) */
	__u8 v6;
	__u8 proto;
	__u8 first_frag; /* offset 0 with more fragments to come */
	__u8 mapped_src; /* IPv6 packet whose source is ::ffff:a.b.c.d (never allowed) */
};

static __always_inline void *cursor_take(struct cursor *c, __u32 len)
{
	void *h = c->pos;

	if (h + len > c->end)
		return NULL;
	c->pos = h + len;
	return h;
}

static __always_inline int is_vlan(__u16 proto)
{
	return proto == sg_htons(ETH_P_8021Q) || proto == sg_htons(ETH_P_8021AD);
}

/* Ethernet plus up to SG_VLAN_MAX tags. Returns the inner EtherType (network order), 0 when the
 * frame ends early, or ETH_P_TOO_MANY_TAGS when there are more tags than we walk. */
static __always_inline __u16 parse_ethernet(struct cursor *c)
{
	struct ethhdr *eth = cursor_take(c, sizeof(*eth));
	__u16 proto;

	if (!eth)
		return 0;
	proto = eth->h_proto;
	/* Fixed trip count: the verifier needs bounded loops, unrolling keeps it cheap. */
#pragma unroll
	for (int i = 0; i < SG_VLAN_MAX; i++) {
		if (!is_vlan(proto))
			return proto;
		struct sg_vlan_hdr *vh = cursor_take(c, sizeof(*vh));
		if (!vh)
			return 0;
		proto = vh->encap_proto;
	}
	return is_vlan(proto) ? ETH_P_TOO_MANY_TAGS : proto;
}

/* IPv4 header with options. PARSE_OK with p->proto/l4/l4_len set, or MALFORMED, or
 * FRAGMENT_PASSED for a non-first fragment (no L4 header in it: see docs/xdp.md). */
static __always_inline int parse_ipv4(struct cursor *c, struct pkt *p)
{
	struct iphdr *ip = cursor_take(c, sizeof(*ip));
	__u32 ihl, tot, avail;
	__u16 frag;

	if (!ip)
		return REASON_MALFORMED;
	ihl = ip->ihl * 4;
	tot = sg_ntohs(ip->tot_len);
	avail = c->end - (void *)ip;
	if (ihl < sizeof(*ip) || tot < ihl || tot > avail)
		return REASON_MALFORMED;
	p->l3 = ip;
	p->v6 = 0;
	p->mapped_src = 0;
	p->proto = ip->protocol;
	frag = sg_ntohs(ip->frag_off);
	if (frag & 0x1fff)
		return REASON_FRAGMENT_PASSED;
	p->first_frag = (frag & 0x2000) != 0;
	/* ihl is at most 60: a bounded variable offset the verifier can track. */
	p->l4 = (void *)ip + ihl;
	p->l4_len = tot - ihl;
	return PARSE_OK;
}

static __always_inline int is_ipv6_ext(__u8 next)
{
	return next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS ||
	       next == IPPROTO_AH || next == IPPROTO_FRAGMENT;
}

/* IPv6 extension headers after the fixed header, up to SG_IPV6_EXT_MAX of them. PARSE_OK with
 * *next = the upper-layer protocol and the cursor on it, or MALFORMED / FRAGMENT_PASSED /
 * IPV6_CHAIN_UNWALKED (still an extension header after SG_IPV6_EXT_MAX of them). */
static __always_inline int parse_ipv6_ext(struct cursor *c, struct pkt *p, __u8 *next)
{
	/* Bounded walk: the verifier needs a fixed trip count. */
#pragma unroll
	for (int i = 0; i < SG_IPV6_EXT_MAX; i++) {
		__u32 hlen;

		if (*next == IPPROTO_HOPOPTS || *next == IPPROTO_ROUTING ||
		    *next == IPPROTO_DSTOPTS) {
			struct ipv6_opt_hdr *oh = cursor_take(c, sizeof(*oh));
			if (!oh)
				return REASON_MALFORMED;
			hlen = (oh->hdrlen + 1) * 8;
			*next = oh->nexthdr;
		} else if (*next == IPPROTO_AH) {
			struct ipv6_opt_hdr *oh = cursor_take(c, sizeof(*oh));
			if (!oh)
				return REASON_MALFORMED;
			hlen = (oh->hdrlen + 2) * 4;
			*next = oh->nexthdr;
		} else if (*next == IPPROTO_FRAGMENT) {
			struct sg_frag_hdr *fh = cursor_take(c, sizeof(*fh));
			__u16 off;
			if (!fh)
				return REASON_MALFORMED;
			off = sg_ntohs(fh->frag_off);
			if (off & 0xfff8)
				return REASON_FRAGMENT_PASSED;
			p->first_frag = off & 1;
			*next = fh->nexthdr;
			continue;
		} else {
			return PARSE_OK;
		}
		/* cursor_take above moved past the 2 bytes we read; skip the rest.
		 * hlen <= 2048, a bound the verifier can carry into the pointer. */
		if (!cursor_take(c, hlen - sizeof(struct ipv6_opt_hdr)))
			return REASON_MALFORMED;
	}
	if (is_ipv6_ext(*next))
		return REASON_IPV6_CHAIN_UNWALKED; /* longer than we walk: could hide TCP/UDP */
	return PARSE_OK;
}

/* IPv6 fixed header and its extension headers. PARSE_OK with p->proto/l4/l4_len set. */
static __always_inline int parse_ipv6(struct cursor *c, struct pkt *p)
{
	struct ipv6hdr *ip6 = cursor_take(c, sizeof(*ip6));
	__u32 len, avail;
	__u8 next;
	int r;

	if (!ip6)
		return REASON_MALFORMED;
	len = sg_ntohs(ip6->payload_len);
	avail = c->end - c->pos;
	if (len > avail)
		return REASON_MALFORMED; /* also rejects jumbograms (payload_len 0 + HBH) below */
	p->l3 = ip6;
	p->v6 = 1;
	p->first_frag = 0;
	p->mapped_src = ip6->saddr.in6_u.u6_addr32[0] == 0 && ip6->saddr.in6_u.u6_addr32[1] == 0 &&
			ip6->saddr.in6_u.u6_addr32[2] == IPV6_MAPPED_PREFIX_W2_BE;
	next = ip6->nexthdr;
	r = parse_ipv6_ext(c, p, &next);
	if (r != PARSE_OK)
		return r;
	p->proto = next;
	p->l4 = c->pos;
	avail = c->pos - (void *)(ip6 + 1); /* extension header bytes */
	if (avail > len)
		return REASON_MALFORMED; /* extension headers run past payload_len */
	p->l4_len = len - avail;
	return PARSE_OK;
}

/* The dispatcher: Ethernet, then IPv4 or IPv6, then the first 4 bytes of TCP/UDP (the ports).
 * PARSE_OK with *p filled, else the verdict reason to apply: PASS_NOT_IP, PASS_UNRELATED (not
 * TCP/UDP/UDP-Lite), MALFORMED, FRAGMENT_PASSED, FRAGMENT_DROPPED, IPV6_CHAIN_UNWALKED. */
static __always_inline int parse_packet(struct cursor *c, struct pkt *p)
{
	__u16 eth_proto = parse_ethernet(c);
	int r;

	if (eth_proto == sg_htons(ETH_P_IP))
		r = parse_ipv4(c, p);
	else if (eth_proto == sg_htons(ETH_P_IPV6))
		r = parse_ipv6(c, p);
	else if (eth_proto == ETH_P_TOO_MANY_TAGS)
		return REASON_MALFORMED; /* a third VLAN tag: we cannot see what it carries */
	else
		return REASON_PASS_NOT_IP;
	if (r != PARSE_OK)
		return r;
	/* UDP-Lite (RFC 3828) has UDP's ports: it is held to a protected UDP port's rules. */
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP && p->proto != IPPROTO_UDPLITE)
		return REASON_PASS_UNRELATED;
	/* Ports: the first 4 bytes of TCP, UDP and UDP-Lite. */
	if (p->l4 + 4 > c->end || p->l4_len < 4)
		return p->first_frag ? REASON_FRAGMENT_DROPPED : REASON_MALFORMED;
	return PARSE_OK;
}

#endif
