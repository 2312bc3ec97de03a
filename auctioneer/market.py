"""One market of an exchange: its rules, its text, its round clock and the admission of its bids.

A :class:`Market` decides rounds but never writes them: :meth:`Market.decide` returns a
:class:`Decision` (the result and the rows to commit), the exchange commits it together with every
other market that closed in the same tick, and only then :meth:`Market.committed` moves the market
on. No sockets, no ledger, no budgets here (the exchange owns those).

Each market has its own feed ``seq``: every broadcast of the market (round open, result, closing)
takes the next one; a heartbeat repeats the latest.

What a round admits and waits for is bounded whatever peers send:

- a zero bid is acknowledged but carries no weight once a round has a positive bid or a reference
  weight: it is then left out of the mechanism, the result and the ledger (when every bid of a round
  is zero and there is no reference, each counts ``1/n``, as the mechanism says);
- the distinct tokens a round's bids bring are capped (``auctioneer.open_round``);
- a round closes early once every *engaged* live participant answered: one that made a positive bid
  (or tried to, too late) in one of the last :data:`ENGAGED_ROUNDS` rounds; where nobody did, one
  that bid at all. Registered agents that never bid, or only bid nothing, do not hold rounds to
  their deadline (in the first rounds of a run every live participant is waited for);
- a round without bids counts towards ``max_idle_rounds`` only if a participant was heard from while
  it was open: a market whose agents all paused (a frozen host, a network blip) is not ended as idle.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, NamedTuple

from auctioneer.ledger import RoundRecord, StoredBid, StoredMarket
from auctioneer.mechanism import Reference, most_charged, run_auction
from auctioneer.open_round import OpenRound
from auctioneer.settings import MarketSettings
from auctioneer.shards import Location
from protocol import ErrorCode, ProtocolError, encode
from protocol.draw import SEED_BYTES, seed_commitment
from protocol.market_rules import MarketRules
from protocol.messages import (
    Heartbeat,
    MarketClosed,
    MarketInfo,
    MarketStatus,
    OutcomeDistribution,
    RoundOpen,
    RoundResult,
    SealedBid,
    assemble,
)

log = logging.getLogger(__name__)

ENGAGED_ROUNDS = 2


class Participation(NamedTuple):
    """Who took part in a closed round: who answered, and who meant to pay (late bids included)."""

    number: int
    answered: set[str]
    paying: set[str]


@dataclass(frozen=True)
class Decision:
    """A decided round, not yet committed: what to write, what to broadcast, and whom to settle."""

    market: Market
    record: RoundRecord
    closing: MarketClosed | None
    bids: dict[str, float]  # agent -> amount reserved, to release at commit (zero bids left out included)
    idle_rounds: int  # the market's idle streak once this round is committed

    @property
    def result(self) -> RoundResult:
        return self.record.result


class Market:
    """One market: its rules, its text so far, its open round."""

    def __init__(self, info: MarketInfo, settings: MarketSettings, stored: StoredMarket | None = None) -> None:
        self.info = info
        self.id = info.id
        self.settings = settings
        self.mechanism = settings.mechanism()
        self._reference = settings.reference_distribution()
        resuming = stored is not None
        stored = stored or StoredMarket(info.id, {}, 0.0, 0, None)
        self.tokens = list(stored.tokens)
        self.text = settings.prompt + "".join(self.tokens)
        self.balances = dict(stored.balances)  # agent -> total paid in this market, for those who paid
        self.last_round = stored.last_round
        self.idle_rounds = 0  # counted afresh after a restart: the first rounds wait for agents to return
        self.seq = stored.seq  # the market's latest broadcast seq
        # A stopped predecessor may have announced a round_open beyond the ledger: the first broadcast
        # of this run skips that seq and says so (``resumed``), so no client takes it for a loss.
        self._resuming = resuming
        self.closed = stored.closed
        self.current: OpenRound | None = None
        self.next_open_at = 0.0
        self.started = False  # round 1 of this run waits for min_agents live agents
        self._waiting: set[str] = set()
        self._waiting_version = -1
        self._recent: deque[Participation] = deque(maxlen=ENGAGED_ROUNDS)  # of the last rounds
        if self.last_round:
            log.info("resuming market %s after round %d (%d tokens)", self.id, self.last_round, len(self.tokens))

    # --- who takes part -------------------------------------------------------------------

    def invites(self, agent: str) -> bool:
        return self.info.agents is None or agent in self.info.agents or agent == self.info.reference_agent

    def participants(self, live: Collection[str]) -> set[str]:
        return {agent for agent in live if self.invites(agent)}

    def has_participant(self, live: Collection[str]) -> bool:
        if self.info.agents is None:
            return bool(live)
        return any(agent in live for agent in (*self.info.agents, self.info.reference_agent))

    def engaged(self, live: Collection[str]) -> set[str]:
        """The live participants a round waits for: those that bid a positive amount in one of the last
        rounds (if none did: those that bid at all); everyone, in the first rounds of a run."""
        if len(self._recent) < ENGAGED_ROUNDS:
            return self.participants(live)
        # From the recent rounds' (few) bidders, not from every live agent: registered agents that
        # do not bid cost nothing here.
        for took_part in ([r.paying for r in self._recent], [r.answered for r in self._recent]):
            engaged = {agent for agents in took_part for agent in agents if agent in live and self.invites(agent)}
            if engaged:
                return engaged
        return set()

    # --- bids -----------------------------------------------------------------------------

    def admit(self, agent: str, number: int, amount: float) -> OpenRound:
        """The open round a bid of ``amount`` from ``agent`` for round ``number`` goes to, or the refusal:
        what can be told without looking at the bid's distribution (checked first, as it is cheap)."""
        if self.closed is not None:
            raise ProtocolError(ErrorCode.MARKET_CLOSED, f"market {self.id} has ended")
        if not self.invites(agent):
            raise ProtocolError(ErrorCode.NOT_INVITED, f"market {self.id} is limited to other agents", "market")
        current = self.current
        if current is None or number != current.number or current.decided:
            if number <= (current.number if current else self.last_round):
                self._bid_late(agent, number, amount)
                raise ProtocolError(ErrorCode.ROUND_CLOSED, f"round {number} is closed", "round")
            raise ProtocolError(ErrorCode.WRONG_ROUND, f"round {number} is not open", "round")
        if agent in current.bids or (agent == self.info.reference_agent and current.reference_bid is not None):
            raise ProtocolError(ErrorCode.DUPLICATE_BID, f"you already bid in round {number}")
        return current

    def check_bid(self, agent: str, bid: SealedBid, current: OpenRound) -> bool:
        """Raise the refusal for the content of ``bid``, admitted to ``current``, if any; True if it is
        the market's reference speaking."""
        reference = agent == self.info.reference_agent
        current.check(bid, reference, self.settings)
        return reference

    def reservation(self, amount: float) -> float:
        """What a bid of ``amount`` reserves of its agent's budget: the most this market's payment
        rule can charge for it (nothing under ``none``)."""
        return most_charged(self.settings.payment, amount)

    def accept(self, agent: str, bid: SealedBid, reference: bool) -> None:
        assert self.current is not None
        self.current.accept(agent, bid, reference)
        self._waiting.discard(agent)

    def _bid_late(self, agent: str, number: int, amount: float) -> None:
        """``agent`` bid for a round after it closed: if it meant to pay, it takes part, only slowly."""
        if amount > 0 or agent == self.info.reference_agent:
            current = self.current
            if current is not None and current.decided and current.number == number:
                current.paying.add(agent)  # its commit is under way
            for closed in self._recent:
                if closed.number == number:
                    closed.paying.add(agent)

    # --- the round clock ------------------------------------------------------------------

    def can_open(self, now: float, live: Collection[str]) -> bool:
        """Whether the next round may open now: not closed, none open, its pause over, and an invited
        agent live (before its first round in this run, ``min_agents`` of them)."""
        if self.closed is not None or self.current is not None or now < self.next_open_at:
            return False
        if self.started:
            return self.has_participant(live)  # nobody there: wait for someone rather than burn rounds
        return len(self.participants(live)) >= max(self.settings.min_agents, 1)

    def _next_seq(self) -> tuple[int, bool | None]:
        """The next broadcast's seq, and its ``resumed``: True if it is the first after a restart
        (it skips one seq), else None (left out)."""
        return (self.seq + 2, True) if self._resuming else (self.seq + 1, None)

    def _round_seed(self, number: int) -> bytes:
        if self.settings.seed is None:
            return secrets.token_bytes(SEED_BYTES)
        return hashlib.sha256(bytes.fromhex(self.settings.seed) + b"round" + number.to_bytes(8, "big")).digest()

    def open_round(self, now: float) -> RoundOpen:
        """Open the next round and return its announcement (its seq becomes durable with the result)."""
        assert self.current is None and self.closed is None
        number = self.last_round + 1
        seed = self._round_seed(number)
        self.started = True
        self.seq, resumed = self._next_seq()
        self._resuming = False
        announcement = assemble(  # from this market's own numbers: constructed, not validated again
            RoundOpen,
            type="round_open",
            id=None,
            re=None,
            seq=self.seq,
            round=number,
            text=self.text,
            seed_commitment=seed_commitment(seed),
            deadline=now + self.settings.round_timeout,
            timeout=self.settings.round_timeout,
            market=self.id,
            resumed=resumed,
        )
        self.current = OpenRound(number, seed, announcement, now)
        self._waiting_version = -1
        return announcement

    def due(self, now: float, live: Collection[str], live_version: int) -> bool:
        """Whether the open round should close now: its deadline passed, or it has bids and every engaged
        live participant has answered (who is still awaited is refreshed when liveness changed)."""
        current = self.current
        if current is None or current.decided:
            return False
        if now >= current.announcement.deadline:
            return True
        if not current.bids:
            return False
        if live_version != self._waiting_version:
            self._waiting = self.engaged(live) - current.answered
            self._waiting_version = live_version
        return not self._waiting

    def decide(self, attended: bool) -> Decision:
        """Run the mechanism on the open round: the result to commit and broadcast (not yet applied).
        ``attended``: a participant was heard from while the round was open."""
        current = self.current
        assert current is not None
        current.decided = True
        reference = self._round_reference(current)
        names = sorted(name for name, b in current.bids.items() if b.bid > 0)
        if not names and (reference is None or reference.weight == 0):
            names = sorted(current.bids)  # B == 0: every submitted distribution weighs 1/n
        bids = [current.bids[name] for name in names]
        token: str | None = None
        distribution: OutcomeDistribution | None = None
        payments: dict[str, float] = {}
        sponsors: dict[str, float] = {}
        if current.bids:
            outcome = run_auction(
                [b.distribution for b in bids],
                [b.bid for b in bids],
                self.mechanism,
                current.seed,
                reference,
            )
            token = outcome.token
            distribution = OutcomeDistribution.of_aggregate(outcome.vocab, outcome.distribution)
            payments = dict(zip(names, outcome.payments.tolist(), strict=True))
            sponsors = outcome.sponsors_by_name(names)
        balances = {name: self.balances.get(name, 0.0) + payments.get(name, 0.0) for name in names}
        # Built from what the mechanism and this market produced: constructed, not validated again.
        result = assemble(
            RoundResult,
            type="round_result",
            id=None,
            re=None,
            seq=self.seq + 1,
            round=current.number,
            token=token,
            text=self.text + (token or ""),
            distribution=distribution,
            bids={name: b.bid for name, b in zip(names, bids, strict=True)},
            payments=payments,
            balances=balances,
            seed=current.seed.hex(),
            seed_commitment=current.announcement.seed_commitment,
            sponsors=sponsors,
            market=self.id,
            reference_weight=reference.weight if reference is not None and reference.weight > 0 else None,
        )
        stored = [
            StoredBid(name, b.bid, b.distribution.tokens, b.distribution.probs)
            for name, b in zip(names, bids, strict=True)
        ]
        if current.reference_bid is not None and self.info.reference_agent is not None:
            live_reference = current.reference_bid.distribution
            stored.append(
                StoredBid(
                    self.info.reference_agent,
                    self.settings.reference_weight,
                    live_reference.tokens,
                    live_reference.probs,
                    reference=True,
                )
            )
        idle_rounds = 0 if current.bids else self.idle_rounds + attended
        reason = self._closing_reason(token, idle_rounds)
        closing = None
        if reason is not None:
            closing = MarketClosed(
                seq=result.seq + 1,
                reason=reason,
                text=result.text,
                rounds=current.number,
                market=self.id,
            )
        record = RoundRecord(self.id, result, current.seed, current.opened_at, stored, encode(result))
        reserved = {name: self.reservation(b.bid) for name, b in current.bids.items()}
        return Decision(self, record, closing, reserved, idle_rounds)

    def _round_reference(self, current: OpenRound) -> Reference | None:
        """The live reference agent's distribution this round, else the market's fixed reference."""
        if current.reference_bid is not None:
            return Reference(current.reference_bid.distribution, self.settings.reference_weight)
        return self._reference

    def _closing_reason(self, token: str | None, idle_rounds: int) -> str | None:
        if token is not None and token == self.settings.stop_token:
            return "stop_token"
        tokens = len(self.tokens) + (token is not None)
        if tokens >= self.settings.max_tokens:
            return "max_tokens"
        if idle_rounds >= self.settings.max_idle_rounds:
            return "idle"
        return None

    def committed(self, decision: Decision, now: float) -> None:
        """The decision is durable: move the market on."""
        result = decision.result
        self.seq = result.seq
        self.balances.update((name, total) for name, total in result.balances.items() if total > 0)
        self.text = result.text
        self.last_round = result.round
        assert self.current is not None
        self._recent.append(Participation(self.current.number, self.current.answered, self.current.paying))
        self.current = None
        self.next_open_at = now + self.settings.round_pause
        self.idle_rounds = decision.idle_rounds
        if result.token is not None:
            self.tokens.append(result.token)
        if decision.closing is not None:
            self.seq = decision.closing.seq
            self.closed = decision.closing
            log.info("market %s closed (%s) after %d rounds", self.id, decision.closing.reason, self.last_round)

    # --- ending early ---------------------------------------------------------------------

    def closing(self, reason: str) -> tuple[MarketClosed, dict[str, float]]:
        """The ``market_closed`` that ends the market now (abandoning an open round, never committed),
        and the bids of that round whose reservations must be released. Applied by :meth:`ended`."""
        abandoned = {name: self.reservation(b.bid) for name, b in self.current.bids.items()} if self.current else {}
        seq, resumed = self._next_seq()
        closed = MarketClosed(
            seq=seq, reason=reason, text=self.text, rounds=self.last_round, market=self.id, resumed=resumed
        )
        return closed, abandoned

    def ended(self, closed: MarketClosed) -> None:
        self.current = None
        self.seq, self._resuming = closed.seq, False
        self.closed = closed
        log.info("market %s closed (%s) after %d rounds", self.id, closed.reason, self.last_round)

    # --- what others see ------------------------------------------------------------------

    @property
    def revenue(self) -> float:
        return sum(self.balances.values())

    def status(self) -> MarketStatus:
        return MarketStatus(
            market=self.info,
            round=self.current.number if self.current else self.last_round,
            seq=self.seq,
            text=self.text,
            revenue=self.revenue,
            closed=self.closed.reason if self.closed else None,
        )

    def heartbeat(self, now: float) -> Heartbeat:
        return Heartbeat(
            seq=self.seq,
            round=self.current.number if self.current else self.last_round,
            time=now,
            market=self.id,
        )


def market_info(
    market_id: str, settings: MarketSettings, definition: dict[str, Any], location: Location | None = None
) -> MarketInfo:
    """A market as agents learn it, from its settings and stored definition (and, in an exchange of
    several shards, the shard that serves it)."""
    return MarketInfo(
        id=market_id,
        rules=MarketRules.model_validate(settings.model_dump(exclude={"seed"})),
        agents=definition.get("agents"),
        reference_agent=definition.get("reference_agent"),
        shard=location.shard if location else None,
        market_endpoint=location.market_endpoint if location else None,
        feed_endpoint=location.feed_endpoint if location else None,
    )


def stored_status(stored: StoredMarket, location: Location | None = None) -> MarketStatus:
    """A market's status as the ledger holds it (an ended market's, or one another shard serves)."""
    settings = MarketSettings.model_validate(stored.definition["settings"])
    return MarketStatus(
        market=market_info(stored.id, settings, stored.definition, location),
        round=stored.last_round,
        seq=stored.seq,
        text=stored.text,
        revenue=stored.revenue,
        closed=stored.closed.reason if stored.closed else None,
    )
