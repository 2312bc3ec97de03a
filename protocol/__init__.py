"""The token-auction wire protocol: message models, the msgpack codec, error codes and the draw.

``SPEC.md`` in this package is the normative, language-neutral description. Nothing here knows
about command lines, storage or the auction's arithmetic beyond the public draw.
"""

from protocol.codec import LIMITS, Limits, decode, encode
from protocol.distribution import Distribution
from protocol.errors import ErrorCode, ProtocolError
from protocol.market_rules import MarketRules, MechanismSettings
from protocol.messages import *  # noqa: F403  (re-export every message model)
from protocol.messages import MESSAGE_TYPES, PROTOCOL_VERSION, Message

__all__ = [
    "LIMITS",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "Distribution",
    "ErrorCode",
    "Limits",
    "MarketRules",
    "MechanismSettings",
    "Message",
    "ProtocolError",
    "decode",
    "encode",
]
