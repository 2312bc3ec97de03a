"""The market's state machine: registration, rounds, bid admission, deciding and committing.

No sockets here: the server feeds it decoded requests and broadcasts what it returns. Everything
that changes the market goes through :meth:`Market.handle` (requests) and :meth:`Market.open_round`
/ :meth:`Market.close_round` (the round clock). A refused request changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from auctioneer.ledger import Ledger, LedgerError, StoredBid
from auctioneer.mechanism import SparseDistribution, run_auction
from auctioneer.settings import ServeSettings
from protocol import LIMITS, ErrorCode, ProtocolError
from protocol.draw import SEED_BYTES, seed_commitment
from protocol.messages import (
    BidAccepted,
    Error,
    Hello,
    MarketClosed,
    Message,
    OutcomeDistribution,
    Ping,
    Pong,
    RoundOpen,
    RoundResult,
    SealedBid,
    SyncReply,
    SyncRequest,
    Welcome,
)

log = logging.getLogger(__name__)

LIVENESS_HEARTBEATS = 3
# A sync_reply carries stored results up to this many bytes (at least one), leaving room for its
# snapshot within what clients accept from the auctioneer; the rest is paged (``more``).
SYNC_RESULT_BYTES = LIMITS.from_auctioneer.max_message_bytes // 2


@dataclass
class AgentRecord:
    name: str
    peer: bytes
    identity: str | None
    budget: float | None
    last_seen: float


@dataclass
class OpenRound:
    number: int
    seed: bytes
    announcement: RoundOpen
    bids: dict[str, SealedBid] = field(default_factory=dict)


class Market:
    """One market: its agents, its current round and its ledger."""

    def __init__(self, settings: ServeSettings, ledger: Ledger, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.ledger = ledger
        self.clock = clock
        self._reference = settings.reference_distribution()
        self.mechanism = settings.mechanism()
        definition = settings.definition()
        stored = ledger.definition()
        if stored is None:
            ledger.create(uuid.uuid4().hex[:12], definition)
        elif stored != definition:
            changed = sorted(k for k in definition if stored.get(k) != definition.get(k))
            raise LedgerError(
                f"{ledger.path} holds a market with different {', '.join(changed)} "
                f"({', '.join(f'{k}={stored.get(k)!r}' for k in changed)}); use the same settings or another --db"
            )
        self.market_id = ledger.market_id()
        self.tokens = ledger.tokens()
        self.text = settings.prompt + "".join(self.tokens)
        self.spent = ledger.balances()
        self.last_round = ledger.last_round()
        self.idle_rounds = ledger.idle_streak()
        # A crashed predecessor may have announced one round_open beyond the ledger: skip its seq.
        self.seq = ledger.last_seq() + (1 if ledger.last_seq() else 0)
        self.closed = ledger.closed()
        self.current: OpenRound | None = None
        self.agents: dict[str, AgentRecord] = {}
        self._peers: dict[bytes, str] = {}
        # Live agents that have not bid in the open round; refreshed when liveness may have changed.
        self._waiting_for: set[str] = set()
        self._waiting_checked = float("-inf")
        if self.last_round:
            log.info("resuming market %s after round %d (%d tokens)", self.market_id, self.last_round, len(self.tokens))

    # --- requests ---------------------------------------------------------------------------

    def handle(self, peer: bytes, message: Message, identity: str | None = None) -> Message:
        """Answer one decoded request from ``peer`` (``identity``: its authenticated key name).

        Every reply echoes the request's ``id`` as ``re``; each handler builds its reply with it.
        """
        try:
            return self._dispatch(peer, message, identity)
        except ProtocolError as exc:
            return Error(code=exc.code, message=exc.message, field=exc.field, re=message.id)

    def _dispatch(self, peer: bytes, message: Message, identity: str | None) -> Message:
        name = self._peers.get(peer)
        if name is not None:
            self.agents[name].last_seen = self.clock()
        if isinstance(message, Hello):
            return self._register(peer, message, identity)
        if isinstance(message, SyncRequest):
            return self._sync(message)
        if not isinstance(message, Ping | SealedBid):
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"the auctioneer does not accept {message.type!r}", "type")
        if name is None:
            # Also the answer an agent's heartbeat gets after an auctioneer restart: register again.
            raise ProtocolError(ErrorCode.NOT_REGISTERED, "send hello first")
        if isinstance(message, Ping):
            return Pong(seq=self.seq, re=message.id)
        return self._accept_bid(name, message)

    def _register(self, peer: bytes, hello: Hello, identity: str | None) -> Welcome:
        if identity is not None and hello.name != identity:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"your key is authorised as {identity!r}, not {hello.name!r}")
        existing = self.agents.get(hello.name)
        if existing is not None and existing.peer != peer:
            if identity is None and self._is_live(existing):
                raise ProtocolError(ErrorCode.NAME_TAKEN, f"agent {hello.name!r} is connected from another peer")
            self._peers.pop(existing.peer, None)
            log.info("agent %s re-registered from a new connection", hello.name)
        elif existing is None:
            log.info("agent %s registered", hello.name)
        self._waiting_checked = float("-inf")  # a new agent may now be waited for
        self.agents[hello.name] = AgentRecord(
            hello.name, peer, identity, self.settings.budget_of(hello.name), self.clock()
        )
        self._peers[peer] = hello.name
        return Welcome(
            name=hello.name,
            market=self.market_id,
            prompt=self.settings.prompt,
            seq=self.seq,
            round=self.current.number if self.current else self.last_round,
            mechanism=self.mechanism,
            budget=self.agents[hello.name].budget,
            spent=self.spent.get(hello.name, 0.0),
            max_bid=self.settings.max_bid,
            max_support=self.settings.max_support,
            heartbeat_interval=self.settings.heartbeat_interval,
            reference_weight=self.settings.effective_reference_weight,
            re=hello.id,
        )

    def _sync(self, request: SyncRequest) -> SyncReply:
        results, more = self.ledger.results_since(request.since_seq, request.limit, SYNC_RESULT_BYTES)
        return SyncReply(
            seq=self.seq,
            last_round=self.last_round,
            prompt=self.settings.prompt,
            text=self.text,
            tokens=self.tokens,
            balances=self.spent,
            results=results,
            open_round=self.current.announcement if self.current else None,
            closed=self.closed,
            more=more,
            re=request.id,
        )

    def _accept_bid(self, name: str, bid: SealedBid) -> BidAccepted:
        if self.closed is not None:
            raise ProtocolError(ErrorCode.MARKET_CLOSED, "the market has ended")
        current = self.current
        if current is None or bid.round != current.number:
            if bid.round <= (current.number if current else self.last_round):
                raise ProtocolError(ErrorCode.ROUND_CLOSED, f"round {bid.round} is closed", "round")
            raise ProtocolError(ErrorCode.WRONG_ROUND, f"round {bid.round} is not open", "round")
        if name in current.bids:
            raise ProtocolError(ErrorCode.DUPLICATE_BID, f"you already bid in round {bid.round}")
        if bid.bid > self.settings.max_bid:
            raise ProtocolError(ErrorCode.INVALID_BID, f"bid exceeds the market maximum {self.settings.max_bid}", "bid")
        if len(bid.distribution.tokens) > self.settings.max_support:
            raise ProtocolError(ErrorCode.INVALID_DISTRIBUTION, "support exceeds the market maximum", "distribution")
        budget = self.agents[name].budget
        if budget is not None and bid.bid > budget - self.spent.get(name, 0.0):
            remaining = budget - self.spent.get(name, 0.0)
            raise ProtocolError(ErrorCode.BUDGET_EXCEEDED, f"bid {bid.bid} exceeds your remaining budget {remaining}")
        current.bids[name] = bid
        self._waiting_for.discard(name)
        return BidAccepted(round=bid.round, re=bid.id)

    # --- liveness ---------------------------------------------------------------------------

    def _is_live(self, agent: AgentRecord) -> bool:
        return self.clock() - agent.last_seen <= LIVENESS_HEARTBEATS * self.settings.heartbeat_interval

    def live_agents(self) -> list[str]:
        return [name for name, agent in self.agents.items() if self._is_live(agent)]

    def everyone_has_bid(self) -> bool:
        """True when the open round has bids and every live registered agent has bid.

        O(1) per call: the set of live agents still to bid is recomputed only every half heartbeat.
        """
        if self.current is None or not self.current.bids:
            return False
        now = self.clock()
        if now - self._waiting_checked > self.settings.heartbeat_interval / 2:
            self._waiting_for = set(self.live_agents()) - self.current.bids.keys()
            self._waiting_checked = now
        return not self._waiting_for

    # --- the round clock --------------------------------------------------------------------

    def _round_seed(self, number: int) -> bytes:
        if self.settings.seed is None:
            return secrets.token_bytes(SEED_BYTES)
        return hashlib.sha256(bytes.fromhex(self.settings.seed) + b"round" + number.to_bytes(8, "big")).digest()

    def open_round(self) -> RoundOpen:
        """Open the next round and return its announcement (its seq is taken durably)."""
        assert self.current is None and self.closed is None
        number = self.last_round + 1
        seed = self._round_seed(number)
        self.seq += 1
        now = self.clock()
        self._waiting_checked = float("-inf")
        announcement = RoundOpen(
            seq=self.seq,
            round=number,
            text=self.text,
            seed_commitment=seed_commitment(seed),
            deadline=now + self.settings.round_timeout,
            timeout=self.settings.round_timeout,
        )
        self.current = OpenRound(number, seed, announcement)
        return announcement

    def close_round(self) -> list[RoundResult | MarketClosed]:
        """Decide the open round, commit it, and return what to broadcast (result, maybe closing)."""
        current = self.current
        assert current is not None
        names = sorted(current.bids)
        bids = [current.bids[name] for name in names]
        token: str | None = None
        distribution: OutcomeDistribution | None = None
        payments: dict[str, float] = {}
        sponsors: dict[str, float] = {}
        if bids:
            outcome = run_auction(
                [SparseDistribution(b.distribution.tokens, b.distribution.probs) for b in bids],
                [b.bid for b in bids],
                self.mechanism,
                current.seed,
                self._reference,
            )
            token = outcome.token
            distribution = OutcomeDistribution.from_arrays(outcome.vocab, outcome.distribution)
            payments = dict(zip(names, outcome.payments.tolist(), strict=True))
            sponsors = outcome.sponsors_by_name(names)
        spent = dict(self.spent)
        for name, amount in payments.items():
            spent[name] = spent.get(name, 0.0) + amount
        result = RoundResult(
            seq=self.seq + 1,
            round=current.number,
            token=token,
            text=self.text + (token or ""),
            distribution=distribution,
            bids={name: b.bid for name, b in zip(names, bids, strict=True)},
            payments=payments,
            balances=spent,
            seed=current.seed.hex(),
            seed_commitment=current.announcement.seed_commitment,
            sponsors=sponsors,
        )
        stored = [
            StoredBid(name, b.bid, b.distribution.tokens, b.distribution.probs)
            for name, b in zip(names, bids, strict=True)
        ]
        self.ledger.commit_round(result, current.seed, stored)
        # Committed: only now does the in-memory market move on.
        self.seq, self.spent, self.text, self.last_round, self.current = (
            result.seq,
            spent,
            result.text,
            current.number,
            None,
        )
        if token is None:
            self.idle_rounds += 1
        else:
            self.idle_rounds = 0
            self.tokens.append(token)
        broadcasts: list[RoundResult | MarketClosed] = [result]
        reason = self._closing_reason(token)
        if reason is not None:
            broadcasts.append(self.close_market(reason))
        return broadcasts

    def _closing_reason(self, token: str | None) -> str | None:
        if token is not None and token == self.settings.stop_token:
            return "stop_token"
        if len(self.tokens) >= self.settings.max_tokens:
            return "max_tokens"
        if self.idle_rounds >= self.settings.max_idle_rounds:
            return "idle"
        return None

    def close_market(self, reason: str) -> MarketClosed:
        """End the market for good (recorded in the ledger)."""
        self.current = None
        self.seq += 1
        self.closed = MarketClosed(seq=self.seq, reason=reason, text=self.text, rounds=self.last_round)
        self.ledger.record_closed(self.closed)
        log.info("market closed (%s) after %d rounds", reason, self.last_round)
        return self.closed
