"""The fwknop SPA wire format (fwknop 2.x, libfko protocol 3.0.0): Rijndael + HMAC only.

packet     = B64(ciphertext)[10:] || B64(HMAC(hmac_key, B64(ciphertext)))          (ASCII)
ciphertext = "Salted__" || salt[8] || AES-256-CBC(k, iv, PKCS7(plaintext))
k || iv    = MD5(key || salt) || MD5(d1 || key || salt) || MD5(d2 || key || salt)
plaintext  = rand(16 digits) : B64(user) : timestamp : version : type : B64(access)
             [: B64(nat)] [: B64(server auth)] [: client timeout] : B64(digest(all before))
access     = "a.b.c.d,proto/port[,proto/port...]"

B64 is base64 with the '=' padding removed. The first 10 characters of B64(ciphertext) are
always "U2FsdGVkX1" ("Salted__"), so the client drops them and the server puts them back; the
HMAC covers the text with them. The HMAC type (so the tag's length) comes from the identity.
Everything before the HMAC check is done on the wire text only: nothing is decoded or decrypted
for a packet that no key authenticates.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from hmac import compare_digest
from ipaddress import IPv4Address
from typing import NamedTuple

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from spagate.protocol.fwknop.keys import SALTED_B64, FwknopKey, b64_decode, b64_unpadded
from spagate.protocol.messages import Reason, Rejected

PROTOCOL_VERSION = "3.0.0"  # FKO_PROTOCOL_VERSION of fwknop 2.x
MIN_PACKET = 140  # fwknopd's MIN_SPA_DATA_SIZE
MAX_PACKET = 1500  # fwknopd's MAX_SPA_PACKET_LEN
SALT_SIZE = 8
BLOCK = 16
RAND_DIGITS = 16  # FKO_RAND_VAL_SIZE
MAX_USER_CHARS = 64  # MAX_SPA_USERNAME_SIZE (encoded)
MAX_MESSAGE_CHARS = 256  # MAX_SPA_MESSAGE_SIZE (encoded)
MAX_CLIENT_TIMEOUT = 2 << 15  # the largest client timeout libfko decodes
MAX_TIMESTAMP = 2**32 - 1  # the client writes it as an unsigned int

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_SALTED = b"Salted__"
_PADS = {n: bytes([n]) * n for n in range(1, BLOCK + 1)}
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")
_DIGITS = re.compile(r"[0-9]+")
_PORT = re.compile(r"(tcp|udp)/([0-9]{1,5})")
_USER_BAD = frozenset('"/\\[]:;|=,+*?<>')

# Inner digest: its type is told by its length, as in fwknop (sha3 shares lengths with sha2).
DIGESTS_BY_LENGTH: dict[int, tuple[str, ...]] = {
    22: ("md5",),
    27: ("sha1",),
    43: ("sha256", "sha3_256"),
    64: ("sha384",),
    86: ("sha512", "sha3_512"),
}
ENCODE_DIGESTS = ("sha256", "sha384", "sha512", "sha1", "sha3_256", "sha3_512")


class MessageType(IntEnum):
    COMMAND = 0
    ACCESS = 1
    NAT_ACCESS = 2
    CLIENT_TIMEOUT_ACCESS = 3
    CLIENT_TIMEOUT_NAT_ACCESS = 4
    LOCAL_NAT_ACCESS = 5
    CLIENT_TIMEOUT_LOCAL_NAT_ACCESS = 6


ACCESS_TYPES = (MessageType.ACCESS, MessageType.CLIENT_TIMEOUT_ACCESS)
_NAT_TYPES = (2, 4, 5, 6)
_TIMEOUT_TYPES = (3, 4, 6)
# Optional fields between the access message and the digest, by type: (fewest, most).
_EXTRA_FIELDS = {0: (0, 1), 1: (0, 1), 2: (1, 2), 5: (1, 2), 3: (1, 2), 4: (2, 3), 6: (2, 3)}


class ProtoPort(NamedTuple):
    proto: str  # "tcp" or "udp"
    port: int

    def __str__(self) -> str:
        return f"{self.proto}/{self.port}"


def random_digits() -> str:
    """fwknop's random value: 16 decimal digits (the first one non-zero)."""
    return str(secrets.randbelow(9 * 10**15) + 10**15)


@dataclass(frozen=True, slots=True)
class FwknopMessage:
    """An access request (types 1 and 3): the only messages spagate encodes or accepts."""

    ip: IPv4Address  # the address to open; 0.0.0.0 asks for the packet's source address
    ports: tuple[ProtoPort, ...]
    user: str
    timestamp: int  # unix seconds, as the client's clock saw them
    client_timeout: int = 0  # seconds asked for (type 3); 0: none (type 1)
    message_type: MessageType = MessageType.ACCESS
    rand: str = field(default_factory=random_digits)
    version: str = PROTOCOL_VERSION
    server_auth: str | None = None
    digest_type: str = "sha256"  # the inner digest's type

    @property
    def ts_ms(self) -> int:
        return self.timestamp * 1000


def access_request(
    ip: IPv4Address | str,
    ports: Sequence[ProtoPort | tuple[str, int]],
    user: str,
    timestamp: int,
    client_timeout: int = 0,
) -> FwknopMessage:
    """The message fwknop -A ... [-f client_timeout] sends: type 3 with a timeout, else 1."""
    return FwknopMessage(
        ip=IPv4Address(ip),
        ports=tuple(ProtoPort(*p) for p in ports),
        user=user,
        timestamp=timestamp,
        client_timeout=client_timeout,
        message_type=(MessageType.CLIENT_TIMEOUT_ACCESS if client_timeout else MessageType.ACCESS),
    )


@dataclass(frozen=True, slots=True)
class FwknopDecoded:
    message: FwknopMessage
    key_index: int


# --- crypto ------------------------------------------------------------------------------------


def _derive(key: bytes, salt: bytes) -> tuple[bytes, bytes]:
    """OpenSSL EVP_BytesToKey(MD5, 1 round): 32-byte AES key and 16-byte IV from key || salt."""
    ks = key + salt
    d1 = hashlib.md5(ks, usedforsecurity=False).digest()
    d2 = hashlib.md5(d1 + ks, usedforsecurity=False).digest()
    d3 = hashlib.md5(d2 + ks, usedforsecurity=False).digest()
    return d1 + d2, d3


def seal(key: FwknopKey, plaintext: bytes, salt: bytes) -> bytes:
    """Encrypt and authenticate any plaintext into fwknop's wire form (salt: 8 random bytes)."""
    if len(salt) != SALT_SIZE:
        raise ValueError(f"salt must be {SALT_SIZE} bytes, got {len(salt)}")
    aes_key, iv = _derive(key.key, bytes(salt))
    pad = BLOCK - len(plaintext) % BLOCK
    enc = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    ct = enc.update(bytes(plaintext) + _PADS[pad]) + enc.finalize()
    text = b64_unpadded(_SALTED + bytes(salt) + ct)
    body = text[len(SALTED_B64) :]
    packet = body + key.tag(body)
    if len(packet) > MAX_PACKET:
        raise ValueError(f"packet of {len(packet)} bytes, fwknop allows {MAX_PACKET}")
    return packet


# --- encoding ----------------------------------------------------------------------------------


def _b64(text: str) -> str:
    return b64_unpadded(text.encode("ascii")).decode("ascii")


def _check_user(user: str) -> str | None:
    """None if fwknop accepts the user name, else why not."""
    if not 0 < len(user) <= 48:  # 48 characters stay within 64 once base64-encoded
        return f"user name of {len(user)} characters (1 to 48)"
    for c in user:
        if not (c.isascii() and c.isalnum()) and (not " " <= c <= "~" or c in _USER_BAD):
            return f"user name character {c!r} is not allowed by fwknop"
    return None


def build_plaintext(msg: FwknopMessage) -> str:
    """The colon-separated plaintext of an access request, digest included."""
    mtype = int(msg.message_type)
    if mtype not in ACCESS_TYPES:
        raise ValueError(f"message type {mtype}: spagate encodes access requests (1, 3) only")
    if mtype == 3 and not 0 < msg.client_timeout <= MAX_CLIENT_TIMEOUT:
        raise ValueError(f"type 3 needs a client timeout of 1 to {MAX_CLIENT_TIMEOUT} seconds")
    if mtype == 1 and msg.client_timeout:
        raise ValueError("a client timeout needs message type 3")
    if not re.fullmatch(r"[0-9]{16}", msg.rand):
        raise ValueError(f"rand must be {RAND_DIGITS} digits")
    if (why := _check_user(msg.user)) is not None:
        raise ValueError(why)
    if not 0 <= msg.timestamp <= MAX_TIMESTAMP:
        raise ValueError(f"timestamp {msg.timestamp} is out of range")
    if not re.fullmatch(r"[\x21-\x39\x3b-\x7e]{1,8}", msg.version):
        raise ValueError(f"version {msg.version!r}: 1 to 8 printable characters, no ':'")
    if not msg.ports:
        raise ValueError("an access request names at least one port")
    for p in msg.ports:
        if p.proto not in ("tcp", "udp") or not 1 <= p.port <= 65535:
            raise ValueError(f"port {p}: expected tcp/N or udp/N with N from 1 to 65535")
    if msg.digest_type not in ENCODE_DIGESTS:
        raise ValueError(f"digest type {msg.digest_type!r}: use one of {ENCODE_DIGESTS}")
    access = ",".join([str(IPv4Address(msg.ip)), *map(str, msg.ports)])
    if len(_b64(access)) > MAX_MESSAGE_CHARS:
        raise ValueError("too many ports for one message")
    fields = [msg.rand, _b64(msg.user), str(msg.timestamp), msg.version, str(mtype), _b64(access)]
    if msg.server_auth is not None:
        if not re.fullmatch(r"[\x20-\x7e]{1,150}", msg.server_auth):
            raise ValueError("server auth: 1 to 150 printable characters")
        fields.append(_b64(msg.server_auth))
    if mtype == 3:
        fields.append(str(msg.client_timeout))
    body = ":".join(fields)
    digest = hashlib.new(msg.digest_type, body.encode("ascii")).digest()
    return f"{body}:{b64_unpadded(digest).decode('ascii')}"


def encode(key: FwknopKey, msg: FwknopMessage, salt: bytes) -> bytes:
    """The UDP payload for an access request; salt must be 8 fresh random bytes."""
    return seal(key, build_plaintext(msg).encode("ascii"), salt)


# --- decoding ----------------------------------------------------------------------------------


def authenticate(
    packet: bytes, keys: Sequence[FwknopKey], candidates: Sequence[int] | None = None
) -> tuple[int, bytes] | Rejected:
    """Find the key whose HMAC (constant-time compare) matches, looking at the wire text only.

    candidates: the indexes into keys worth trying (fwknopd tries only the stanzas whose SOURCE
    matches the packet's source), in order; None tries every key. Returns (index, the ciphertext
    text without its prefix) or a Rejected.
    """
    if type(packet) is not bytes:
        if not isinstance(packet, bytes | bytearray | memoryview):
            return Rejected(Reason.SIZE, f"not bytes: {type(packet).__name__}")
        packet = bytes(packet)
    n = len(packet)
    if not MIN_PACKET <= n <= MAX_PACKET:
        return Rejected(Reason.SIZE, f"{n} bytes, fwknop packets have {MIN_PACKET}-{MAX_PACKET}")
    stray = packet.translate(None, _B64_ALPHABET)
    if stray:
        return Rejected(Reason.FORMAT, f"byte {stray[0]:#04x} is not base64 (no padding allowed)")
    if packet.startswith(SALTED_B64):
        # The prefix is stripped on the wire and put back by the server, so a packet that
        # carries it is a seen packet dressed up to dodge the replay cache (fwknopd agrees).
        return Rejected(Reason.FORMAT, "starts with the Salted__ prefix, which is never sent")
    order = range(len(keys)) if candidates is None else candidates
    tried = 0
    for index in order:
        if not 0 <= index < len(keys):
            continue
        key = keys[index]
        cut = n - key._tag_chars
        body = packet[:cut]
        tried += 1
        if compare_digest(key.tag(body), packet[cut:]):
            return index, body
    if not tried:
        return Rejected(Reason.UNKNOWN_SOURCE, "no identity accepts packets from this source")
    return Rejected(Reason.MAC, "no key's HMAC matches")


class _Bad(Exception):
    def __init__(self, reason: Reason, detail: str):
        self.rejected = Rejected(reason, detail)


def open_message(key: FwknopKey, body: bytes) -> FwknopMessage | Rejected:
    """Decrypt and parse an authenticated ciphertext text (as returned by authenticate)."""
    text = SALTED_B64 + body
    if len(text) % 4 == 1:
        return Rejected(Reason.FORMAT, f"base64 ciphertext of {len(text)} characters")
    try:
        data = binascii.a2b_base64(text + b"=" * (-len(text) % 4))
    except binascii.Error as e:
        return Rejected(Reason.FORMAT, f"ciphertext is not base64: {e}")
    ct = data[16:]
    if data[:8] != _SALTED or not ct or len(ct) % BLOCK:
        return Rejected(Reason.FORMAT, f"not a Salted__ AES ciphertext ({len(data)} bytes)")
    aes_key, iv = _derive(key.key, data[8:16])
    dec = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor()
    plain = dec.update(ct) + dec.finalize()
    pad = plain[-1]
    if not 0 < pad <= BLOCK or not plain.endswith(_PADS[pad]):
        return Rejected(Reason.PADDING, f"bad PKCS#7 padding (last byte {pad})")
    try:
        return parse_plaintext(plain[:-pad])
    except _Bad as bad:
        return bad.rejected


def decode(
    packet: bytes, keys: Sequence[FwknopKey], candidates: Sequence[int] | None = None
) -> FwknopDecoded | Rejected:
    """Authenticate, decrypt and parse one packet. Never raises: every failure is a Rejected."""
    auth = authenticate(packet, keys, candidates)
    if type(auth) is Rejected:
        return auth
    index, body = auth
    msg = open_message(keys[index], body)
    if type(msg) is Rejected:
        return msg
    return FwknopDecoded(msg, index)


def _b64_text(value: str, name: str, max_chars: int) -> str:
    if not 0 < len(value) <= max_chars:
        raise _Bad(Reason.FIELD, f"{name} of {len(value)} characters (1 to {max_chars})")
    try:
        raw = b64_decode(value)
    except ValueError:
        raise _Bad(Reason.FIELD, f"{name} is not base64") from None
    if not _PRINTABLE.fullmatch(raw) or not raw:
        raise _Bad(Reason.FIELD, f"{name} is not printable text")
    return raw.decode("ascii")


def _number(value: str, name: str, max_chars: int) -> int:
    if not 0 < len(value) <= max_chars or not _DIGITS.fullmatch(value):
        raise _Bad(Reason.FIELD, f"{name} {value[:16]!r} is not a number")
    return int(value)


def _check_digest(text: str, digest: str) -> str:
    algorithms_ = DIGESTS_BY_LENGTH.get(len(digest))
    if algorithms_ is None:
        raise _Bad(Reason.DIGEST, f"digest of {len(digest)} characters fits no digest type")
    body = text[: len(text) - len(digest) - 1].encode("ascii")
    want = digest.encode("ascii")
    for name in algorithms_:
        if compare_digest(b64_unpadded(hashlib.new(name, body).digest()), want):
            return name
    raise _Bad(Reason.DIGEST, f"{'/'.join(algorithms_)} digest does not match the message")


def _access(text: str) -> tuple[IPv4Address, tuple[ProtoPort, ...]]:
    ip_text, _, rest = text.partition(",")
    try:
        ip = IPv4Address(ip_text)
    except ValueError:
        raise _Bad(Reason.FIELD, f"{ip_text[:40]!r} is not an IPv4 address") from None
    if not rest:
        raise _Bad(Reason.FIELD, "the access request names no port")
    ports: dict[ProtoPort, None] = {}
    for spec in rest.split(","):
        m = _PORT.fullmatch(spec)
        if m is None:
            proto = spec.partition("/")[0]
            if proto in ("icmp", "none"):
                raise _Bad(Reason.FIELD, f"{proto} access is not supported (tcp and udp only)")
            raise _Bad(Reason.FIELD, f"{spec[:40]!r} is not tcp/PORT or udp/PORT")
        port = int(m.group(2))
        if not 1 <= port <= 65535:
            raise _Bad(Reason.FIELD, f"port {port} is out of range (1 to 65535)")
        ports.setdefault(ProtoPort(m.group(1), port))
    return ip, tuple(ports)


def _refuse_type(mtype: int, fields: list[str]) -> _Bad:
    """Command and NAT messages are authenticated but never acted on: say what was asked."""
    try:
        asked = _b64_text(fields[5], "message", MAX_MESSAGE_CHARS)
    except _Bad:
        asked = "?"
    if mtype == MessageType.COMMAND:
        ip, _, command = asked.partition(",")
        return _Bad(
            Reason.COMMAND,
            f"command message for {ip[:40]} ({command[:60]!r}): spagate runs no commands",
        )
    try:
        nat = _b64_text(fields[6], "NAT access", MAX_MESSAGE_CHARS)
    except _Bad:
        nat = "?"
    local = "local " if mtype in (5, 6) else ""
    return _Bad(
        Reason.NAT,
        f"{local}NAT access message (type {mtype}) for {asked[:60]!r} to {nat[:60]!r}: "
        "spagate opens its own ports only",
    )


def parse_plaintext(plain: bytes) -> FwknopMessage:
    """Parse a decrypted plaintext; raises _Bad (open_message turns it into a Rejected)."""
    if not _PRINTABLE.fullmatch(plain):
        raise _Bad(Reason.FIELD, "plaintext holds non-printable bytes")
    text = plain.decode("ascii")
    fields = text.split(":")
    if not 7 <= len(fields) <= 10:
        raise _Bad(Reason.FIELD, f"{len(fields)} fields, fwknop messages have 7 to 10")
    digest_type = _check_digest(text, fields[-1])
    rand = fields[0]
    if len(rand) != RAND_DIGITS or not _DIGITS.fullmatch(rand):
        raise _Bad(Reason.FIELD, f"random value is not {RAND_DIGITS} digits")
    user = _b64_text(fields[1], "user name", MAX_USER_CHARS)
    if (why := _check_user(user)) is not None:
        raise _Bad(Reason.FIELD, why)
    timestamp = _number(fields[2], "timestamp", 12)
    version = fields[3]
    if not 0 < len(version) <= 8:
        raise _Bad(Reason.FIELD, f"version of {len(version)} characters (1 to 8)")
    mtype = _number(fields[4], "message type", 2)
    if mtype not in _EXTRA_FIELDS:
        raise _Bad(Reason.MESSAGE_TYPE, f"message type {mtype} is not an fwknop type (0-6)")
    extra = fields[6:-1]
    lo, hi = _EXTRA_FIELDS[mtype]
    if not lo <= len(extra) <= hi:
        raise _Bad(Reason.FIELD, f"type {mtype} with {len(fields)} fields")
    if mtype not in ACCESS_TYPES:
        raise _refuse_type(mtype, fields)
    ip, ports = _access(_b64_text(fields[5], "access request", MAX_MESSAGE_CHARS))
    client_timeout = 0
    if mtype in _TIMEOUT_TYPES:
        client_timeout = _number(extra.pop(), "client timeout", 6)
        if client_timeout > MAX_CLIENT_TIMEOUT:
            raise _Bad(Reason.FIELD, f"client timeout {client_timeout} > {MAX_CLIENT_TIMEOUT}")
    server_auth = _b64_text(extra[0], "server auth", MAX_MESSAGE_CHARS) if extra else None
    return FwknopMessage(
        ip=ip,
        ports=ports,
        user=user,
        timestamp=timestamp,
        client_timeout=client_timeout,
        message_type=MessageType(mtype),
        rand=rand,
        version=version,
        server_auth=server_auth,
        digest_type=digest_type,
    )
