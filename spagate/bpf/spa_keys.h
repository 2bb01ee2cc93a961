/* spagate SPA keys for the in-kernel MAC check (Python side: spagate/gate/kernel/spakeys.py).
 *
 * A key is not the HMAC key itself but the two SHA-256 midstates of HMAC-SHA256(hmac_key, .):
 *   inner = state after compressing (hmac_key zero-padded to 64 bytes) XOR 0x36..
 *   outer = state after compressing (hmac_key zero-padded to 64 bytes) XOR 0x5c..
 * Userspace computes them once; the kernel then needs 3 compressions per key and packet.
 * Words are in host byte order (plain __u32 values, as SHA-256 state words).
 */
#ifndef SPAGATE_SPA_KEYS_H
#define SPAGATE_SPA_KEYS_H

#include <uapi/linux/types.h>

#include "consts.h"

struct spa_key {
	__u32 inner[8];
	__u32 outer[8];
};

/* One SPA payload exactly as on the wire, copied out of the packet by the caller (e.g. with
 * bpf_xdp_load_bytes). Declared as words so a stack copy is 4-byte aligned: the verifier
 * rejects misaligned stack loads. The bytes keep network order; sha256.h swaps them. */
struct spa_wire {
	__u32 mac[8];   /* HMAC-SHA256(hmac_key, iv || ct) */
	__u32 body[16]; /* iv[16] || ct[48]: the 64-byte message that is MACed */
};

#endif
