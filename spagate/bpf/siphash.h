/* spagate: SipHash-2-4 over the one message the tag covers (docs/admission.md).
 *
 *   spa_tag_ok(k0, k1, wire) == 1  iff  the IV's last word == low 32 bits of
 *                                       SipHash-2-4(k0 || k1, iv[0:12] || ct[0:48])
 *
 * The message is 60 bytes: words 0, 1, 2, 4 .. 15 of wire->body (word 3 is the tag itself).
 * SipHash reads little-endian 64-bit words; on a little-endian host a __u32 load of 4 wire
 * bytes is already their little-endian value, so a message word is two body words joined.
 * Python side: spagate/protocol/tag.py (the client computes the tag, tests check both agree).
 *
 * ~20 SipRounds, no branch, no table: a few hundred instructions, walked once by the
 * verifier. 64-bit arithmetic throughout (BPF registers are 64-bit).
 */
#ifndef SPAGATE_SIPHASH_H
#define SPAGATE_SIPHASH_H

#include "spa_keys.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "spagate's SipHash joins little-endian words: port the word loads first"
#endif

#define sip_rotl(x, b) (((x) << (b)) | ((x) >> (64 - (b))))

#define SIP_ROUND(v0, v1, v2, v3)                                                              \
	do {                                                                                   \
		v0 += v1;                                                                      \
		v1 = sip_rotl(v1, 13);                                                         \
		v1 ^= v0;                                                                      \
		v0 = sip_rotl(v0, 32);                                                         \
		v2 += v3;                                                                      \
		v3 = sip_rotl(v3, 16);                                                         \
		v3 ^= v2;                                                                      \
		v0 += v3;                                                                      \
		v3 = sip_rotl(v3, 21);                                                         \
		v3 ^= v0;                                                                      \
		v2 += v1;                                                                      \
		v1 = sip_rotl(v1, 17);                                                         \
		v1 ^= v2;                                                                      \
		v2 = sip_rotl(v2, 32);                                                         \
	} while (0)

/* Message word i (0..6) of iv[0:12] || ct: body words (0,1) (2,4) (5,6) ... (13,14). */
#define SIP_LO(i) ((i) == 0 ? 0 : (i) == 1 ? 2 : 2 * (i) + 1)
#define SIP_HI(i) ((i) == 0 ? 1 : (i) == 1 ? 4 : 2 * (i) + 2)

static __always_inline __u64 spa_siphash(__u64 k0, __u64 k1, const struct spa_wire *wire)
{
	__u64 v0 = k0 ^ 0x736f6d6570736575ULL;
	__u64 v1 = k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = k0 ^ 0x6c7967656e657261ULL;
	__u64 v3 = k1 ^ 0x7465646279746573ULL;
	__u64 m;

#pragma unroll
	for (int i = 0; i < 7; i++) {
		m = (__u64)wire->body[SIP_LO(i)] | ((__u64)wire->body[SIP_HI(i)] << 32);
		v3 ^= m;
		SIP_ROUND(v0, v1, v2, v3);
		SIP_ROUND(v0, v1, v2, v3);
		v0 ^= m;
	}
	/* Last block: the 4 remaining bytes (body word 15), the length (60) in the top byte. */
	m = (__u64)wire->body[15] | (60ULL << 56);
	v3 ^= m;
	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	v0 ^= m;
	v2 ^= 0xff;
	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

/* 1 if the tag in the IV's last word verifies under (k0, k1). */
static __always_inline int spa_tag_ok(__u64 k0, __u64 k1, const struct spa_wire *wire)
{
	return (__u32)spa_siphash(k0, k1, wire) == wire->body[3];
}

#endif
