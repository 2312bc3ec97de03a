"""The token-auction wire protocol: message models, the msgpack codec and error codes.

``SPEC.md`` in this package is the normative, language-neutral description.
"""

from protocol.codec import DEFAULT_LIMITS, Limits, decode, encode
from protocol.distribution import Distribution
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import *  # noqa: F403  (re-export every message model)
from protocol.messages import MESSAGE_TYPES, PROTOCOL_VERSION, Message

__all__ = [
    "DEFAULT_LIMITS",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "Distribution",
    "ErrorCode",
    "Limits",
    "Message",
    "ProtocolError",
    "decode",
    "encode",
]
