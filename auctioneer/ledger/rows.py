"""Records as table rows and rows as records: what every SQL store writes and reads the same way.

A round's rows (``rounds``, ``bids``, ``payments``, ``sponsors``) are built once by
:func:`round_rows` whatever the database; a bid's tokens are msgpack and its probabilities
little-endian float64 (``bin``), a round's ``result`` the bytes that were broadcast.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import msgpack
import numpy as np

from auctioneer.ledger.records import RoundRecord, StoredBid, StoredMarket
from protocol import LIMITS, decode
from protocol.codec import pack
from protocol.distribution import probs_bytes
from protocol.messages import MarketClosed, Message, RoundResult

ROUND_ROW_COLUMNS = (
    ("rounds", ("id", "market", "round", "token", "seed", "seed_commitment", "result_seq", "opened_at",
                "committed_at", "result")),
    ("bids", ("round_id", "agent", "bid", "tokens", "probs", "reference")),
    ("payments", ("round_id", "agent", "amount")),
    ("sponsors", ("round_id", "sponsor", "share")),
)  # fmt: skip

Row = tuple[Any, ...]
APPEND_ONLY = ("rounds", "bids", "payments", "sponsors")  # tables no row of which may change


def round_inserts(placeholder: str) -> tuple[str, ...]:
    """The INSERT of each table of :data:`ROUND_ROW_COLUMNS`, with the database's ``placeholder``."""
    return tuple(
        f"INSERT INTO {table}({', '.join(columns)}) VALUES ({', '.join([placeholder] * len(columns))})"
        for table, columns in ROUND_ROW_COLUMNS
    )


def round_rows(records: Sequence[RoundRecord], committed_at: float, first_id: int) -> tuple[list[Row], ...]:
    """The rows of ``records`` for each table of :data:`ROUND_ROW_COLUMNS`, rounds numbered from
    ``first_id`` in order (every commit appends at the end of each table)."""
    rounds: list[Row] = []
    bids: list[Row] = []
    payments: list[Row] = []
    sponsors: list[Row] = []
    for round_id, record in enumerate(records, start=first_id):
        result = record.result
        rounds.append(
            (round_id, record.market, result.round, result.token, record.seed, result.seed_commitment, result.seq,
             record.opened_at, committed_at, record.payload)
        )  # fmt: skip
        bids += [
            (round_id, b.agent, b.bid, pack(b.tokens), probs_bytes(b.probs), int(b.reference)) for b in record.bids
        ]
        payments += [(round_id, agent, amount) for agent, amount in result.payments.items()]
        sponsors += [(round_id, sponsor, share) for sponsor, share in result.sponsors.items()]
    return rounds, bids, payments, sponsors


def stored_market(row: Row, rounds: Iterable[tuple[int, str | None, int]], balances: dict[str, float]) -> StoredMarket:
    """A market from its row (``market, definition, opened_at, seq, closed``) and its rounds'
    ``(round, token, result_seq)`` in order."""
    market, definition, opened_at, seq, closed = row
    tokens = []
    idle = last_round = 0
    for number, token, result_seq in rounds:
        last_round, seq = number, max(seq, result_seq)
        if token is None:
            idle += 1
        else:
            idle = 0
            tokens.append(token)
    closing = stored_message(closed) if closed is not None else None
    assert closing is None or isinstance(closing, MarketClosed)
    definition = definition if isinstance(definition, dict) else json.loads(definition)
    return StoredMarket(market, dict(definition), opened_at, seq, closing, last_round, tokens, idle, balances)


def stored_bid(agent: str, bid: float, tokens: bytes, probs: bytes, reference: int | bool) -> StoredBid:
    return StoredBid(
        agent, bid, msgpack.unpackb(bytes(tokens)), np.frombuffer(bytes(probs), dtype="<f8"), bool(reference)
    )


def stored_result(data: bytes) -> RoundResult:
    result = stored_message(data)
    assert isinstance(result, RoundResult)
    return result


def stored_message(data: bytes) -> Message:
    """A message a ledger wrote: trusted, so decoded without the network's size limits."""
    return decode(bytes(data), LIMITS.stored)


def page_of_results(results: Iterable[bytes], limit: int, max_bytes: int) -> tuple[list[bytes], bool]:
    """At most ``limit`` of ``results`` (the query asked for one more) and, past the first, at most
    ``max_bytes`` in all; and whether more remain."""
    page: list[bytes] = []
    size = 0
    for data in results:
        size += len(data)
        if len(page) == limit or (page and size > max_bytes):
            return page, True
        page.append(bytes(data))
    return page, False
