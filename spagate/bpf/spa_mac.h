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

/* Index of the first configured key whose HMAC matches wire->mac, or -1. */
static __always_inline int spa_mac_any(const struct spa_wire *wire)
{
	__u32 *n = spa_key_count_get(), count;

	if (!n)
		return -1;
	count = *n;
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < SPA_KEYS_MAX; i++) {
		__u32 idx = i; /* the map helper takes its address: keep i in a register */
		struct spa_key *k;

		if (i >= count)
			break;
		k = spa_key_at(&idx);
		if (k && spa_hmac_ok(k, wire))
			return i;
	}
	return -1;
}

#endif
