/* spagate packet parsing: small always-inline helpers around a cursor.
 *
 * Each helper checks that the header it returns lies entirely inside the packet before the
 * caller may touch it (the verifier rejects any packet access not preceded by such a check).
 * Helpers return a pointer to the header, or NULL when the packet ends early.
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

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define sg_ntohs(x) ((__u16)__builtin_bswap16((__u16)(x)))
#define sg_htons(x) ((__u16)__builtin_bswap16((__u16)(x)))
#define sg_htonl(x) ((__u32)__builtin_bswap32((__u32)(x)))
#else
#define sg_ntohs(x) ((__u16)(x))
#define sg_htons(x) ((__u16)(x))
#define sg_htonl(x) ((__u32)(x))
#endif

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

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

#define SG_VLAN_MAX 2   /* 802.1Q and QinQ */
#define SG_IPV6_EXT_MAX 6 /* extension headers walked before giving up (malformed) */

struct cursor {
	void *pos;
	void *end;
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
 * frame ends early, or 0xffff when there are more tags than we walk. */
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
	return is_vlan(proto) ? 0xffff : proto;
}

#endif
