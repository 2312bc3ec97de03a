"""Feed topics: which broadcasts a subscriber receives, filtered by ZeroMQ's own subscriptions.

Every broadcast is one frame: ``0xC1 ‖ topic ‖ "\\n" ‖ msgpack message`` (SPEC.md section 3.3).
``0xC1`` is never the first byte of a msgpack value, so a client of revision 1.2, which subscribes
to everything and expects plain msgpack, finds these frames undecodable and skips them. Topics:
``x`` for exchange notices and ``m.<market id>`` for a market's broadcasts; a subscriber subscribes
to ``0xC1 ‖ topic ‖ "\\n"``, so ZeroMQ delivers it exactly the markets it asked for. The default
market's broadcasts are published a second time as plain frames, for revision 1.2 clients.
"""

from __future__ import annotations

TOPIC_MARK = b"\xc1"
TOPIC_END = b"\n"
EXCHANGE_TOPIC = b"x"


def market_topic(market: str) -> bytes:
    return b"m." + market.encode("ascii")


def subscription(topic: bytes) -> bytes:
    """The prefix to subscribe to for ``topic`` (complete, so ``m.ab`` never matches ``m.abc``)."""
    return TOPIC_MARK + topic + TOPIC_END


def topic_frame(topic: bytes, payload: bytes) -> bytes:
    """The feed frame carrying an encoded message under ``topic``."""
    return TOPIC_MARK + topic + TOPIC_END + payload


def split_frame(frame: bytes) -> tuple[bytes | None, bytes]:
    """``(topic, payload)`` of a feed frame; ``(None, frame)`` for a plain revision-1.2 frame."""
    if not frame.startswith(TOPIC_MARK):
        return None, frame
    topic, _, payload = frame[1:].partition(TOPIC_END)
    return topic, payload


MARKET_PREFIX = TOPIC_MARK + b"m."
BROAD_SUBSCRIPTIONS = frozenset(
    {subscription(EXCHANGE_TOPIC)[:n] for n in range(4)} | {MARKET_PREFIX[:n] for n in range(4)}
)
"""Subscriptions a feed accepts whatever markets exist: everything, every market, the exchange's notices."""


def subscribed_market(prefix: bytes) -> str | None:
    """The market a complete market subscription names; None if ``prefix`` is not one."""
    if not (prefix.startswith(MARKET_PREFIX) and prefix.endswith(TOPIC_END)):
        return None
    try:
        return prefix[len(MARKET_PREFIX) : -1].decode("ascii")
    except UnicodeDecodeError:
        return None
