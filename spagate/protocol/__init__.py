"""The sans-IO SPA protocol core: bytes and a clock in, a typed result out.

Rule: nothing here opens a socket or a file, logs, or reads a clock by itself.
"""

from spagate.protocol.keys import KeyPair, generate_keypair, parse_hex_key
from spagate.protocol.messages import Accepted, Decoded, Message, Reason, Rejected
from spagate.protocol.sparoid import PACKET_SIZE, decode, encode, make_packet
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
    "make_packet",
    "parse_hex_key",
]
