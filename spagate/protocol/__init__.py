"""The sans-IO SPA protocol core: bytes and a clock in, a typed result out."""

from spagate.protocol.codec import PACKET_SIZE, Message, decode, encode
from spagate.protocol.keys import KeyPair, generate_keypair, parse_hex_key
from spagate.protocol.result import Accepted, Decoded, Reason, Rejected
from spagate.protocol.verifier import Verifier

__all__ = [
    "PACKET_SIZE",
    "Accepted",
    "Decoded",
    "KeyPair",
    "Message",
    "Reason",
    "Rejected",
    "Verifier",
    "decode",
    "encode",
    "generate_keypair",
    "parse_hex_key",
]
