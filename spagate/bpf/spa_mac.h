/* spagate: try the key ring against one SPA payload (in-kernel MAC check).
 *
 * The includer defines, before including this file, two accessors over its maps:
 *   struct spa_key *spa_key_at(__u32 *slot)  slot of an array of SPA_KEYS_MAX struct spa_key
 *   __u32 *spa_key_count_get(void)           how many slots (from 0) are in use
 * bcc rewrites map calls (map.lookup()) only in the main source file, never in a header:
 * hence accessors instead of map names here.
 *
 * The key loop is bounded and NOT unrolled: one spa_hmac_ok() is ~12,900 instructions, an
 * unrolled ring would not fit the 16-bit jump offsets. Call it from a program whose verifier
 * state is simple (a tail-called program): the verifier walks it once per reaching state.
 */
#ifndef SPAGATE_SPA_MAC_H
#define SPAGATE_SPA_MAC_H

#include "sha256.h"

/* Index of the first key in slots [first, last) (and below the configured count) whose HMAC
 * matches wire->mac, or -1. digest: the HMAC under the last key tried (wire byte order).
 * One call site, one inlined HMAC: a tagged packet passes first = its slot, last = slot + 1. */
static __always_inline int spa_mac_range(const struct spa_wire *wire, __u32 first, __u32 last,
					 __u32 digest[8])
{
	__u32 *n = spa_key_count_get(), count;

	if (!n)
		return -1;
	count = *n;
	if (last > count)
		last = count;
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < SPA_KEYS_MAX; i++) {
		__u32 idx = i; /* the map helper takes its address: keep i in a register */
		struct spa_key *k;

		if (i >= last)
			break;
		if (i < first)
			continue;
		k = spa_key_at(&idx);
		if (k && spa_hmac_ok(k, wire, digest))
			return i;
	}
	return -1;
}

/* Index of the first configured key whose HMAC matches wire->mac, or < 0. */
static __always_inline int spa_mac_any(const struct spa_wire *wire, __u32 digest[8])
{
	return spa_mac_range(wire, 0, SPA_KEYS_MAX, digest);
}

#endif
