/* spagate: SHA-256 compression and HMAC-SHA256 for the one message shape of a SPA packet,
 * written for the BPF verifier and bcc's clang.
 *
 *   spa_hmac_ok(key, wire, digest) == 1  iff  wire->mac == HMAC-SHA256(hmac_key, wire->body)
 *
 * where key holds the HMAC midstates (spa_keys.h): 3 compressions per key, no branches.
 *
 * Size: ~12,900 BPF instructions per spa_hmac_ok() (~880 ns per key, bench/xdp_hmac.py).
 * The verifier walks it once per distinct state that reaches it, so call it where the state
 * is simple: a separate program tail-called from the gate verifies with 8 keys; inlined into
 * gate.c's spa() (reached by dozens of distinct parse paths) it exceeds the verifier's
 * 1M-instruction budget even with one key (measured).
 *
 * Verifier- and compiler-driven choices:
 * - Everything is __always_inline and every loop fully unrolled (#pragma unroll): constant
 *   tables are then indexed by constants only and folded into immediates. bcc 0.26 cannot
 *   load programs with global .rodata, so no table may ever be indexed at run time.
 * - There is no branch inside a compression: the verifier walks it once, straight through.
 * - bcc compiles for BPF cpu v1 (no 32-bit subregisters), so 32-bit words live in 64-bit
 *   registers. A rotation of a clean (zero-extended) word x is (x | x << 32) >> n: the low 32
 *   bits are right, the high bits are junk that additions and XORs never move down. Only the
 *   two new state words (a, e) are truncated per round, and schedule words are truncated for
 *   free by their 32-bit store.
 * - The message schedule is a rolling 16-word window in memory (w[t & 15]) instead of W[64].
 *   sha_opaque() / sha_fence() are empty asm statements that emit no instruction; they stop
 *   clang from narrowing the 64-bit tricks back to 32-bit ops (which v1 would emulate with
 *   masks) and from interleaving rounds, which otherwise spills enough temporaries to blow
 *   the 512-byte BPF stack (one HMAC measured at over 512 bytes without them).
 * - The payload comes from a caller-owned, 4-byte-aligned copy (struct spa_wire), never from
 *   packet memory: packet pointers need a bounds check before each load, and the verifier
 *   rejects misaligned stack loads (hence words, not bytes).
 * - The second inner block is constant (padding for a 128-byte message): its schedule plus
 *   the round constants is precomputed (SHA_KW_PAD128), so that block costs no schedule.
 */
#ifndef SPAGATE_SHA256_H
#define SPAGATE_SHA256_H

#include "spa_keys.h"

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define sha_be32(x) ((__u32)__builtin_bswap32((__u32)(x)))
#else
#define sha_be32(x) ((__u32)(x))
#endif

#define sha_dup(x) ((x) | ((x) << 32))                     /* x clean: rotations by shift */
#define sha_opaque(x) asm volatile("" : "+r"(x))           /* clang may not rewrite x */
#define sha_fence(w) asm volatile("" : : "r"(w) : "memory") /* w[] is re-read from memory */

/* SHA-256 round constants. */
#define SHA_K                                                                                  \
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,    \
	0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,    \
	0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,    \
	0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,    \
	0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,    \
	0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,    \
	0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,    \
	0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,    \
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,    \
	0xc67178f2

/* K[t] + W[t] for the padding block of a 128-byte message (0x80, zeros, bit length 1024).
 * Checked against a Python SHA-256 by tests/unit/gate/test_gate_spakeys.py. */
#define SHA_KW_PAD128                                                                          \
	0xc28a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,    \
	0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,    \
	0x9bdc06a7, 0xc19bf574, 0x649b69c1, 0xf23e4787, 0x0fe1edc6, 0x240ca2dc, 0x4fe9346f,    \
	0x4b1e84aa, 0x61b9431e, 0x36f9b39a, 0xfa465156, 0xb85a8e77, 0xb01d681d, 0x5e59c7ea,    \
	0x2faa3291, 0x07e2a6fb, 0x1f515a8e, 0x6f915f0a, 0x5fb4221d, 0x612cc90a, 0x35c3e883,    \
	0xa925d9d4, 0x8b82d1b9, 0x92848088, 0x9a5b7704, 0x034ba272, 0x9f594686, 0x6f480592,    \
	0xe49bee62, 0xc1cf12eb, 0x3ef55e11, 0x1f0f59a3, 0x327a0634, 0xbfa4d9bc, 0x770df572,    \
	0x9b9fbf40, 0xc21be9e9, 0xf5001d69, 0x840ec6da, 0x8a337f83, 0xb737625a, 0xe9b9ecd0,    \
	0xfe5d6d40, 0xa52dab8d, 0xee944592, 0x5f2d004a, 0x3bc8cb2e, 0x36d964a4, 0x5eb10caf,    \
	0x6289d971

/* Working variables a..h, each a clean 32-bit value in a 64-bit register. */
struct sha_vars {
	__u64 v[8];
};

/* One round; kw = K[t] + W[t] (junk above bit 31 is fine). Renames instead of moving. */
static __always_inline void sha_round(struct sha_vars *s, int t, __u64 kw)
{
	/* Index of a..h in round t: the variables rotate by one position per round. */
#define SV(i) s->v[((i) - t) & 7]
	__u64 a = SV(0), b = SV(1), c = SV(2), e = SV(4), f = SV(5), g = SV(6);
	__u64 da = sha_dup(a), de = sha_dup(e), t1, t2;

	sha_opaque(da);
	sha_opaque(de);
	t1 = SV(7) + ((de >> 6) ^ (de >> 11) ^ (de >> 25)) + (g ^ (e & (f ^ g))) + kw;
	t2 = ((da >> 2) ^ (da >> 13) ^ (da >> 22)) + ((a & b) | (c & (a | b)));
	SV(3) = (__u32)(SV(3) + t1); /* new e */
	SV(7) = (__u32)(t1 + t2);    /* new a */
#undef SV
}

static __always_inline void sha_load(struct sha_vars *s, const __u32 st[8])
{
#pragma unroll
	for (int i = 0; i < 8; i++)
		s->v[i] = st[i];
}

/* st += s (64 rounds rotate the names 64 times: back to the start). */
static __always_inline void sha_add(__u32 st[8], const struct sha_vars *s)
{
#pragma unroll
	for (int i = 0; i < 8; i++)
		st[i] += s->v[i];
}

/* Compress one block into st. w: the 16 message words as values (not bytes); clobbered. */
static __always_inline void sha256_compress(__u32 st[8], __u32 w[16])
{
	static const __u32 K[64] = {SHA_K};
	struct sha_vars s;

	sha_load(&s, st);
#pragma unroll
	for (int t = 0; t < 64; t++) {
		if (t >= 16) { /* t is a constant in each unrolled copy: no branch is emitted */
			__u64 w15 = w[(t - 15) & 15], w2 = w[(t - 2) & 15];
			__u64 d15 = sha_dup(w15), d2 = sha_dup(w2);

			sha_opaque(d15);
			sha_opaque(d2);
			w[t & 15] += w[(t - 7) & 15] + ((d15 >> 7) ^ (d15 >> 18) ^ (w15 >> 3)) +
				     ((d2 >> 17) ^ (d2 >> 19) ^ (w2 >> 10));
		}
		sha_round(&s, t, (__u64)K[t] + w[t & 15]);
		sha_fence(w);
	}
	sha_add(st, &s);
}

/* Compress the padding block of a 128-byte message (second block of the inner hash). */
static __always_inline void sha256_compress_pad128(__u32 st[8])
{
	static const __u32 KW[64] = {SHA_KW_PAD128};
	struct sha_vars s;

	sha_load(&s, st);
#pragma unroll
	for (int t = 0; t < 64; t++)
		sha_round(&s, t, KW[t]);
	sha_add(st, &s);
}

/* 1 if wire->mac is HMAC-SHA256 of wire->body under key k, else 0. No early exit: the
 * digest is compared by OR-accumulating XORs. k may point into a map value. digest gets the
 * HMAC computed (wire byte order), e.g. to remember what a packet's MAC must be. */
static __always_inline int spa_hmac_ok(const struct spa_key *k, const struct spa_wire *wire,
				       __u32 digest[8])
{
	__u32 st[8], w[16], diff = 0;

	/* Inner hash: (hmac_key ^ ipad) is already in k->inner; then the body, then padding. */
#pragma unroll
	for (int i = 0; i < 8; i++)
		st[i] = k->inner[i];
#pragma unroll
	for (int i = 0; i < 16; i++)
		w[i] = sha_be32(wire->body[i]);
	sha256_compress(st, w);
	sha256_compress_pad128(st);

	/* Outer hash: (hmac_key ^ opad) in k->outer; then inner digest || padding for 96 bytes. */
#pragma unroll
	for (int i = 0; i < 8; i++) {
		w[i] = st[i];
		w[8 + i] = 0;
		st[i] = k->outer[i];
	}
	w[8] = 0x80000000;
	w[15] = (64 + 32) * 8;
	sha256_compress(st, w);

#pragma unroll
	for (int i = 0; i < 8; i++) {
		digest[i] = sha_be32(st[i]);
		diff |= digest[i] ^ wire->mac[i];
	}
	return diff == 0;
}

#endif
