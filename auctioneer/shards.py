"""An exchange across several auctioneer processes ("shards") on one PostgreSQL database.

The unit of scale is the market: each open market is owned by exactly one shard at a time, through
a lease row (owner, epoch, expiry in database time) that its owner renews every third of
``lease_seconds``. Every commit of a market's rounds checks the epoch in the same transaction
(:meth:`PostgresShard.fence`), so a shard paused or cut off past its lease can never commit again
once another has taken the market; it drops the market when its next renewal fails. This module
keeps the leases, and what else the shards share:

- **placement**: a market opened at any shard goes to the live shard with the fewest open markets
  (or the one the operator names), which picks it up at once (a notification) or at its next pass;
- **failover**: each pass also claims expired leases (``FOR UPDATE SKIP LOCKED``, at most a fair
  share of them per pass), bumping their epoch; the claimer resumes each market after its last
  committed round, as a restart does;
- **budgets** (:meth:`PostgresShard.lease_budget`): an agent's one budget lives in the database; a
  shard holds a slice of it (one conditional update, so ``spent + leased <= budget`` always, a
  constraint of the table) and reserves bids against the slice in memory, leasing more when it runs
  short and giving back what it no longer needs: idle slices at its passes, everything when it
  stops, and an idle slice another shard asks for. The slices of a shard that died are given back by
  the others once it owns no lease (its commits are fenced off by then);
- **notices**: shards tell each other of markets opened, moved and ended (PostgreSQL
  ``LISTEN``/``NOTIFY``), so that every shard's feed announces every market of the exchange, and an
  agent connected to any shard learns where each of its markets is.

:class:`SoleShard` is the exchange of one process on one SQLite file: it owns everything, always.
"""

from __future__ import annotations

import json
import logging
import math
import select
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg

from auctioneer.ledger import DEFAULT_SHARD, LedgerError, PostgresLedger
from auctioneer.ledger.postgres import SHARD_APPLICATION
from protocol import ErrorCode, ProtocolError

log = logging.getLogger(__name__)

CHANNEL = "token_auction"
NOTICE_LOOK_SECONDS = 0.02
NOW = "extract(epoch from clock_timestamp())"


@dataclass(frozen=True)
class Location:
    """Where a market lives: its shard and that shard's endpoints."""

    shard: str
    market_endpoint: str
    feed_endpoint: str


@dataclass(frozen=True)
class ShardNotice:
    """What one shard told the others: a market ``opened``, ``moved``, ``ended`` or ``placed`` on a
    shard, or an agent's budget ``wanted`` by a shard that ran out of it."""

    kind: str
    subject: str  # a market id, or an agent name
    shard: str


@dataclass
class LeasePass:
    """What a pass over the leases changed: markets gained (placed here, or claimed after their
    shard died) and lost (another shard holds their lease now), and the other shards' notices."""

    gained: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    notices: list[ShardNotice] = field(default_factory=list)


class Shard(Protocol):
    """This process's part in its exchange."""

    name: str

    def owned(self, open_markets: Iterable[str]) -> list[str]:
        """Of the exchange's open markets, those this process serves at start."""
        ...

    def due(self, now: float) -> bool:
        """Whether a lease pass is due at ``now``."""
        ...

    def next_due(self) -> float:
        """When a lease pass may next be due (the exchange wakes by then, even when idle)."""
        ...

    def lease_pass(self, now: float, serving: Iterable[str]) -> LeasePass: ...

    def fence(self, markets: Iterable[str]) -> dict[str, int] | None: ...

    def adopt(self, market: str) -> None:
        """``market`` was just created with this shard as its owner."""
        ...

    def place(self, wanted: str | None) -> Location: ...

    def locations(self) -> dict[str, Location]: ...

    def shards(self) -> list[Location]: ...

    def lease_budget(self, agent: str, amount: float, budget: float | None) -> tuple[float, float | None]: ...

    def give_back(self, agent: str, amount: float) -> None: ...

    def notify(self, kind: str, subject: str) -> None:
        """Tell the other shards ``kind`` about ``subject`` (sent by the next :meth:`flush`)."""
        ...

    def flush(self) -> None:
        """Send what :meth:`notify` queued."""
        ...

    def stop(self) -> None: ...


class SoleShard:
    """The whole exchange in one process: every market is its own, and budgets need no slices."""

    def __init__(self, market_endpoint: str, feed_endpoint: str) -> None:
        self.name = DEFAULT_SHARD
        self.location = Location(self.name, market_endpoint, feed_endpoint)

    def owned(self, open_markets: Iterable[str]) -> list[str]:
        return list(open_markets)

    def due(self, now: float) -> bool:
        return False

    def next_due(self) -> float:
        return math.inf

    def lease_pass(self, now: float, serving: Iterable[str]) -> LeasePass:
        return LeasePass()

    def fence(self, markets: Iterable[str]) -> dict[str, int] | None:
        return None

    def adopt(self, market: str) -> None:
        pass

    def place(self, wanted: str | None) -> Location:
        if wanted not in (None, self.name):
            raise ProtocolError(ErrorCode.INVALID_SETTINGS, f"this exchange has no shard {wanted!r}", "shard")
        return self.location

    def locations(self) -> dict[str, Location]:
        return {}

    def shards(self) -> list[Location]:
        return []

    def lease_budget(self, agent: str, amount: float, budget: float | None) -> tuple[float, float | None]:
        return math.inf, budget  # the whole budget is here

    def give_back(self, agent: str, amount: float) -> None:
        pass

    def notify(self, kind: str, subject: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def stop(self) -> None:
        pass


class PostgresShard:
    """One shard of an exchange whose record is a PostgreSQL database."""

    def __init__(self, store: PostgresLedger, market_endpoint: str, feed_endpoint: str, lease_seconds: float) -> None:
        self.store = store
        self.name = store.shard
        self.location = Location(self.name, market_endpoint, feed_endpoint)
        self.lease_seconds = lease_seconds
        self.epochs: dict[str, int] = {}  # market -> the epoch of its lease this shard holds
        self._next_pass = self._next_look = 0.0
        self._listener: psycopg.Connection[Any] | None = None
        self._untold: list[str] = []  # notices for the other shards, sent by flush()
        self._announce()
        self._give_back_every_slice()  # a restarted shard holds nothing: its open rounds went with it

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self.store.connection() as conn:
            yield conn

    def _announce(self) -> None:
        with self._connection() as conn:
            conn.execute(
                "UPDATE shards SET market_endpoint = %s, feed_endpoint = %s,"
                f" alive_until = {NOW} + %s WHERE shard = %s",
                (self.location.market_endpoint, self.location.feed_endpoint, self.lease_seconds, self.name),
            )
        self._listen()

    def _listen(self) -> None:
        try:
            self._listener = psycopg.connect(self.store.url, autocommit=True, connect_timeout=5)
            self._listener.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            self._listener = None
            log.warning("not listening to the other shards (%s): their notices come with the next pass", exc)

    # --- leases ---------------------------------------------------------------------------

    def owned(self, open_markets: Iterable[str]) -> list[str]:
        """The open markets whose lease is this shard's, or is free (expired, or none): claimed now."""
        wanted = list(open_markets)
        with self._connection() as conn, conn.transaction():
            conn.execute(
                f"INSERT INTO leases(market, owner, epoch, expires_at) SELECT market, %s, 1, {NOW} + %s"
                " FROM markets WHERE closed IS NULL AND market = ANY(%s) ON CONFLICT (market) DO NOTHING",
                (self.name, self.lease_seconds, wanted),
            )
            rows = conn.execute(
                f"UPDATE leases SET owner = %s, epoch = CASE WHEN owner = %s THEN epoch ELSE epoch + 1 END,"
                f" expires_at = {NOW} + %s WHERE market = ANY(%s) AND (owner = %s OR expires_at < {NOW})"
                " RETURNING market, epoch",
                (self.name, self.name, self.lease_seconds, wanted, self.name),
            ).fetchall()
        self.epochs = {market: int(epoch) for market, epoch in rows}
        return [market for market in wanted if market in self.epochs]

    def due(self, now: float) -> bool:
        if now >= self._next_pass:
            return True
        if now >= self._next_look:  # another shard's notice brings the pass forward (looked for at 50 Hz)
            self._next_look = now + NOTICE_LOOK_SECONDS
            return self.told()
        return False

    def next_due(self) -> float:
        return min(self._next_pass, self._next_look)

    def lease_pass(self, now: float, serving: Iterable[str]) -> LeasePass:
        """Renew this shard's leases and its life, claim what is free, read the other shards' notices."""
        self._next_pass = now + self.lease_seconds / 3
        outcome = LeasePass(notices=self._notices())
        mine = set(serving)
        with self._connection() as conn, conn.transaction():
            conn.execute(
                f"UPDATE shards SET alive_until = {NOW} + %s WHERE shard = %s", (self.lease_seconds, self.name)
            )
            renewed = dict(
                conn.execute(
                    f"UPDATE leases SET expires_at = {NOW} + %s WHERE owner = %s RETURNING market, epoch",
                    (self.lease_seconds, self.name),
                ).fetchall()
            )
            outcome.lost = sorted(m for m in mine if renewed.get(m) != self.epochs.get(m))
            placed = sorted(m for m in renewed if m not in mine)  # opened elsewhere for this shard
            self._end_stuck_transactions(conn)
            claimed = self._claim_expired(conn)
            self._reclaim_dead_slices(conn)
        for market in outcome.lost:
            self.epochs.pop(market, None)
            log.warning("market %s is no longer this shard's (its lease was taken): letting it go", market)
        self.epochs.update({m: int(renewed[m]) for m in placed})
        self.epochs.update(claimed)
        outcome.gained = [*placed, *sorted(claimed)]
        for market in claimed:
            self.notify("moved", market)
        return outcome

    def _end_stuck_transactions(self, conn: psycopg.Connection[Any]) -> None:
        """End the transactions that shards which stopped renewing have held open for longer than a
        lease: a shard stopped in the middle of a commit (SIGSTOP, a partition) would otherwise hold
        its row locks (leases, accounts) until it wakes, and no other shard could take its markets or
        settle its agents' payments. PostgreSQL's ``idle_in_transaction_session_timeout`` covers a
        session stopped between statements, not one stopped in the middle of a pipeline."""
        rows = conn.execute(
            "SELECT s.shard, pg_terminate_backend(a.pid) FROM pg_stat_activity AS a JOIN shards AS s"
            " ON a.application_name = %s || s.shard WHERE a.datname = current_database() AND s.shard <> %s"
            f" AND s.alive_until < {NOW} AND extract(epoch from a.xact_start) < {NOW} - %s",
            (SHARD_APPLICATION, self.name, self.lease_seconds),
        ).fetchall()
        if rows:
            log.warning("ended %d transaction(s) of shard(s) that stopped renewing their leases: %s", len(rows),
                        ", ".join(sorted({shard for shard, _ in rows})))  # fmt: skip

    def _claim_expired(self, conn: psycopg.Connection[Any]) -> dict[str, int]:
        """Expired leases of open markets, at most this shard's fair share of them, now this shard's."""
        live = conn.execute(f"SELECT COUNT(*) FROM shards WHERE alive_until > {NOW}").fetchone()
        expired = conn.execute(
            f"SELECT COUNT(*) FROM leases JOIN markets USING (market) WHERE closed IS NULL AND expires_at < {NOW}"
        ).fetchone()
        if not expired or not expired[0]:
            return {}
        share = max(1, math.ceil(expired[0] / max(live[0] if live else 1, 1)))
        rows = conn.execute(
            f"UPDATE leases SET owner = %s, epoch = epoch + 1, expires_at = {NOW} + %s WHERE market IN ("
            f" SELECT market FROM leases JOIN markets USING (market) WHERE closed IS NULL AND expires_at < {NOW}"
            " ORDER BY market LIMIT %s FOR UPDATE OF leases SKIP LOCKED) RETURNING market, epoch",
            (self.name, self.lease_seconds, share),
        ).fetchall()
        if rows:
            log.warning("claimed %d market(s) whose shard stopped renewing them: %s", len(rows),
                        ", ".join(sorted(m for m, _ in rows)))  # fmt: skip
        return {market: int(epoch) for market, epoch in rows}

    def _reclaim_dead_slices(self, conn: psycopg.Connection[Any]) -> None:
        """Give back the budget slices of shards that died and own no lease any more."""
        rows = conn.execute(
            f"DELETE FROM slices WHERE shard IN (SELECT shard FROM shards WHERE alive_until < {NOW}"
            " AND NOT EXISTS (SELECT 1 FROM leases WHERE owner = shards.shard)) RETURNING agent, amount"
        ).fetchall()
        if rows:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "UPDATE accounts SET leased = GREATEST(leased - %s, 0) WHERE agent = %s",
                    [(amount, agent) for agent, amount in rows],
                )

    def fence(self, markets: Iterable[str]) -> dict[str, int] | None:
        return {market: self.epochs[market] for market in markets if market in self.epochs}

    def adopt(self, market: str) -> None:
        self.epochs[market] = 1  # a new lease's first epoch (PostgresLedger.create_market)

    # --- placement and locations ----------------------------------------------------------

    def place(self, wanted: str | None) -> Location:
        """Where a new market goes: the shard named (it must be alive), else the live shard with the
        fewest open markets (this one, on a tie)."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT s.shard, s.market_endpoint, s.feed_endpoint, COUNT(l.market) FROM shards AS s"
                " LEFT JOIN leases AS l ON l.owner = s.shard"
                f" WHERE s.alive_until > {NOW} OR s.shard = %s GROUP BY s.shard",
                (self.name,),
            ).fetchall()
        live = {shard: (Location(shard, market, feed), load) for shard, market, feed, load in rows}
        if wanted is not None:
            if wanted not in live:
                raise ProtocolError(ErrorCode.INVALID_SETTINGS, f"no live shard {wanted!r}", "shard")
            return live[wanted][0]
        return min(live.values(), key=lambda entry: (entry[1], entry[0].shard != self.name, entry[0].shard))[0]

    def locations(self) -> dict[str, Location]:
        """Every open market's shard, and where that shard serves."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT l.market, s.shard, s.market_endpoint, s.feed_endpoint FROM leases AS l"
                " JOIN shards AS s ON s.shard = l.owner"
            ).fetchall()
        return {market: Location(shard, m, f) for market, shard, m, f in rows}

    def shards(self) -> list[Location]:
        """Every live shard (this one included), and where it serves."""
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT shard, market_endpoint, feed_endpoint FROM shards WHERE alive_until > {NOW} OR shard = %s"
                " ORDER BY shard",
                (self.name,),
            ).fetchall()
        return [Location(shard, market, feed) for shard, market, feed in rows]

    # --- budgets --------------------------------------------------------------------------

    def lease_budget(self, agent: str, amount: float, budget: float | None) -> tuple[float, float | None]:
        """Lease up to ``amount`` more of ``agent``'s budget for this shard (its account created with
        ``budget`` if it has none): what was granted, and the budget as the database holds it."""
        with self._connection() as conn, conn.transaction():
            conn.execute("INSERT INTO accounts(agent, budget) VALUES (%s, %s) ON CONFLICT DO NOTHING", (agent, budget))
            row = conn.execute(
                "SELECT budget, budget - spent - leased FROM accounts WHERE agent = %s FOR UPDATE", (agent,)
            ).fetchone()
            assert row is not None
            current, free = row
            if current is None:
                return math.inf, None
            granted = max(0.0, min(amount, float(free)))
            if granted > 0:
                conn.execute("UPDATE accounts SET leased = leased + %s WHERE agent = %s", (granted, agent))
                conn.execute(
                    "INSERT INTO slices(agent, shard, amount) VALUES (%s, %s, %s) ON CONFLICT (agent, shard)"
                    " DO UPDATE SET amount = slices.amount + excluded.amount",
                    (agent, self.name, granted),
                )
        return granted, float(current)

    def give_back(self, agent: str, amount: float) -> None:
        """Return ``amount`` of the slice this shard holds of ``agent``'s budget."""
        if amount <= 0:
            return
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT 1 FROM accounts WHERE agent = %s FOR UPDATE", (agent,))  # accounts before slices
            held = conn.execute(
                "SELECT amount FROM slices WHERE agent = %s AND shard = %s FOR UPDATE", (agent, self.name)
            ).fetchone()
            back = min(amount, float(held[0])) if held else 0.0
            if back > 0:
                conn.execute("UPDATE slices SET amount = amount - %s WHERE agent = %s AND shard = %s",
                             (back, agent, self.name))  # fmt: skip
                conn.execute("UPDATE accounts SET leased = GREATEST(leased - %s, 0) WHERE agent = %s", (back, agent))

    # --- notices --------------------------------------------------------------------------

    def notify(self, kind: str, subject: str) -> None:
        self._untold.append(json.dumps({"kind": kind, "subject": subject, "shard": self.name}))

    def flush(self) -> None:
        """Every queued notice in one statement (a tick that ends many markets tells them at once)."""
        if not self._untold:
            return
        untold, self._untold = self._untold, []
        try:
            with self._connection() as conn:
                conn.execute("SELECT pg_notify(%s, notice) FROM unnest(%s::text[]) AS notice", (CHANNEL, untold))
        except LedgerError as exc:
            log.warning("could not tell the other shards %d notice(s): %s", len(untold), exc)

    def _notices(self) -> list[ShardNotice]:
        if self._listener is None or self._listener.closed:
            self._listen()
            if self._listener is None:
                return []
        notices = []
        try:
            for notice in self._listener.notifies(timeout=0):
                told = json.loads(notice.payload)
                if told.get("shard") != self.name:
                    notices.append(ShardNotice(str(told["kind"]), str(told["subject"]), str(told["shard"])))
        except psycopg.Error as exc:
            log.warning("lost the other shards' notices (%s): listening again", exc)
            self._listener.close()
        return notices

    def told(self) -> bool:
        """Whether another shard has told this one something (it then passes at once)."""
        if self._listener is None or self._listener.closed:
            return False
        return bool(select.select([self._listener.fileno()], [], [], 0)[0])

    def _give_back_every_slice(self) -> None:
        with self._connection() as conn, conn.transaction():
            rows = conn.execute("DELETE FROM slices WHERE shard = %s RETURNING agent, amount", (self.name,)).fetchall()
            with conn.cursor() as cursor:
                cursor.executemany(
                    "UPDATE accounts SET leased = GREATEST(leased - %s, 0) WHERE agent = %s",
                    [(amount, agent) for agent, amount in rows],
                )

    def stop(self) -> None:
        """Stop as a shard: every budget slice given back, its leases expiring now (the live shards
        claim them at once), and no longer counted alive."""
        self.flush()
        try:
            self._give_back_every_slice()
            with self._connection() as conn, conn.transaction():
                conn.execute(f"UPDATE leases SET expires_at = {NOW} WHERE owner = %s", (self.name,))
                conn.execute(f"UPDATE shards SET alive_until = {NOW} WHERE shard = %s", (self.name,))
        except LedgerError as exc:
            log.warning("could not hand this shard's markets over: %s (they move when their leases expire)", exc)
        if self._listener is not None:
            self._listener.close()
