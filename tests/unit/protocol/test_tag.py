"""spagate's tag in the sparoid IV: SipHash-2-4 against an independent implementation and the
paper's vector, the wire layout, and packets an independent sparoid decoder accepts."""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from ipaddress import IPv4Address, IPv6Address

import pytest
import siphashc  # an independent SipHash-2-4 (C), test dependency only
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sparoid_codec import ref_decode

from spagate.gate.core.hints import MARGIN_MS, tag_table
from spagate.protocol import Verifier, decode, generate_keypair, make_packet
from spagate.protocol import tag as spatag
from spagate.protocol.keys import KeyPair

NOW = 1_796_000_000_000


def test_siphash_paper_vector():
    # SipHash paper, appendix A: key 00..0f, message 00..0e.
    assert spatag.siphash24(bytes(range(16)), bytes(range(15))) == 0xA129CA6149BE45E5


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.binary(max_size=80))
def test_siphash_agrees_with_an_independent_implementation(key, data):
    assert spatag.siphash24(key, data) == siphashc.siphash(key, data)


def test_key_derivation_is_fixed_and_binds_both_keys():
    kp = KeyPair(b"\x01" * 32, b"\x02" * 32)
    t = hmac.new(b"\x02" * 32, b"spagate tag v1" + b"\x01" * 32, hashlib.sha256).digest()
    tk = spatag.tag_keys(kp)
    assert (tk.mac, tk.hint) == (t[:16], t[16:])
    assert spatag.tag_keys(KeyPair(b"\x03" * 32, b"\x02" * 32)).mac != tk.mac
    h = hmac.new(t[16:], b"spagate hint" + (7).to_bytes(8, "big"), hashlib.sha256).digest()
    assert spatag.hint(tk, 7) == h[:4]
    assert repr(tk) == "TagKeys()"  # keys stay out of logs


@pytest.mark.parametrize("ip", ["198.51.100.7", "2001:db8::1", "0.0.0.0", "::"])
def test_an_independent_sparoid_decoder_accepts_tagged_packets(ip):
    kp = generate_keypair()
    p = make_packet(kp, ip, NOW, tagged=True)
    version, ts, nonce, ip_bytes = ref_decode(p, kp.key, kp.hmac_key)  # MAC, CBC, padding
    addr = IPv6Address(ip) if ":" in ip else IPv4Address(ip)
    assert (version, ts, ip_bytes) == (1, NOW, addr.packed)
    assert decode(p, [kp]).message.nonce == nonce
    assert Verifier([kp]).verify(p, NOW).message.ip == addr


def test_the_wire_layout():
    kp = generate_keypair()
    tk = spatag.tag_keys(kp)
    p = make_packet(kp, "198.51.100.7", NOW, tagged=True)
    mac, iv, ct = p[:32], p[32:48], p[48:]
    assert mac == hmac.new(kp.hmac_key, iv + ct, hashlib.sha256).digest()
    assert iv[:4] == spatag.hint(tk, NOW // spatag.STEP_MS)  # hint[4]
    tag = (siphashc.siphash(tk.mac, iv[:12] + ct) & 0xFFFFFFFF).to_bytes(4, "little")
    assert iv[12:] == tag  # rand[8] || tag[4]
    assert spatag.tag_ok(tk, p)
    for i in range(32, 96):  # any bit of the IV or the ciphertext breaks the tag
        bad = bytearray(p)
        bad[i] ^= 0x80
        assert not spatag.tag_ok(tk, bytes(bad)), i


def test_the_iv_keeps_its_random_bits_and_the_hint_rotates():
    kp = generate_keypair()
    ivs = [make_packet(kp, "192.0.2.1", NOW, tagged=True)[32:48] for _ in range(200)]
    assert len({iv[:4] for iv in ivs}) == 1  # one hint per identity and step
    assert len({iv[4:12] for iv in ivs}) == 200  # 64 fresh random bits per packet
    assert len({iv[12:] for iv in ivs}) == 200
    ones = sum(bin(int.from_bytes(iv[4:], "big")).count("1") for iv in ivs)
    assert 0.45 < ones / (200 * 96) < 0.55
    later = make_packet(kp, "192.0.2.1", NOW + spatag.STEP_MS, tagged=True)
    assert later[32:36] != ivs[0][:4]
    other = make_packet(generate_keypair(), "192.0.2.1", NOW, tagged=True)
    assert other[32:36] != ivs[0][:4]


def test_nonce_is_fresh_and_random_though_it_absorbs_the_tag():
    kp = generate_keypair()
    nonces = [decode(make_packet(kp, "192.0.2.1", NOW, tagged=True), [kp]).message.nonce
              for _ in range(200)]  # fmt: skip
    assert len(set(nonces)) == 200 and len({n[:4] for n in nonces}) == 200


def test_the_gate_keeps_the_hints_of_every_step_within_the_skew():
    ring = [generate_keypair() for _ in range(3)]
    now = int(time.time() * 1000)
    table, clashes = tag_table(ring, now, 5000)
    assert clashes == []
    steps = spatag.steps_around(now, 5000 + MARGIN_MS)
    assert {(h.slot, h.step) for h in table.values()} == {(s, n) for s in range(3) for n in steps}
    for slot, kp in enumerate(ring):
        for skew in (-5000, 0, 5000):  # a packet at the edge of the window carries a live hint
            p = make_packet(kp, "192.0.2.1", now + skew, tagged=True)
            h = table[p[32:36]]
            assert h.slot == slot and (h.k0, h.k1) == spatag.tag_keys(kp).k0k1
    # A 300 s skew keeps 21 steps (+ margin) per identity: the map's capacity holds them.
    assert len(tag_table(ring, now, 300_000)[0]) <= 3 * 23


def test_untagged_packets_stay_untagged():
    kp = generate_keypair()
    p = make_packet(kp, "192.0.2.1", NOW, rand=os.urandom)
    assert not spatag.tag_ok(spatag.tag_keys(kp), p)
