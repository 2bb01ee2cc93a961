"""fwknop's SPA format (Rijndael + HMAC), sans-IO: a codec, its keys and a verifier.

See docs/fwknop.md for the format as spagate implements it and what it refuses.
"""

from spagate.protocol.fwknop.codec import (
    ACCESS_TYPES,
    FwknopDecoded,
    FwknopMessage,
    MessageType,
    ProtoPort,
    access_request,
    authenticate,
    build_plaintext,
    decode,
    encode,
    open_message,
    seal,
)
from spagate.protocol.fwknop.keys import HMAC_TYPES, FwknopKey, b64_decode
from spagate.protocol.fwknop.verifier import (
    DEFAULT_MAX_AGE_MS,
    FwknopAccepted,
    FwknopVerifier,
    replay_key,
)

__all__ = [
    "ACCESS_TYPES",
    "DEFAULT_MAX_AGE_MS",
    "HMAC_TYPES",
    "FwknopAccepted",
    "FwknopDecoded",
    "FwknopKey",
    "FwknopMessage",
    "FwknopVerifier",
    "MessageType",
    "ProtoPort",
    "access_request",
    "authenticate",
    "b64_decode",
    "build_plaintext",
    "decode",
    "encode",
    "open_message",
    "replay_key",
    "seal",
]
