"""One exchange on PostgreSQL, across several auctioneer processes ("shards"): a real PostgreSQL
server (started by the session's fixture, as the ``postgres`` user when run as root), shards and
agents as separate processes, and the faults a shared record must survive: a shard killed, a shard
paused past its lease, the database restarted, one agent's budget bid against on every shard."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest

from auctioneer.audit import audit_ledger
from auctioneer.ledger import PostgresLedger, SqliteLedger
from auctioneer.ledger.postgres import SHARD_APPLICATION
from protocol.schema import json_value, protocol_schema
from protocol.sockets import free_tcp_endpoint
from simulation.postgres_server import PostgresServer
from tests.helpers import MarketRun, WireClient, WireFeed, run_cli, static_agent, wait_until

LEASE = "1.0"  # seconds: short, so that failover happens within the tests' patience
FAST = ["--heartbeat", "0.2", "--round-timeout", "1.0", "--lease-seconds", LEASE]


@dataclass
class Exchange:
    """Shards of one exchange on one database, and agents, as processes whose logs land in ``directory``."""

    url: str
    directory: Path
    shards: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (market, feed) endpoints
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def shard(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        market, feed = self.shards.setdefault(name, (free_tcp_endpoint(), free_tcp_endpoint()))
        command = [sys.executable, "-m", "auctioneer", "-v", "serve", "--quiet", "--db", self.url, "--shard", name]
        command += ["--market", market, "--feed", feed, "--stay", *FAST, *args]
        return self._start(name, command)

    def agent(self, name: str, shard: str, *args: str) -> subprocess.Popen[bytes]:
        market, feed = self.shards[shard]
        command = [sys.executable, "-m", "agent_client", "-v", "--name", name, "--market", market, "--feed", feed]
        command += ["--report-json", str(self.directory / f"{name}.json"), *args]
        return self._start(name, command)

    def _start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        starts = sum(1 for p in self.directory.glob(f"{name}*.log"))
        with open(self.directory / f"{name}{starts or ''}.log", "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.processes[f"{name}{starts or ''}"] = process
        return process

    def operator(self, shard: str, *args: str) -> dict[str, Any]:
        done = run_cli("-m", "auctioneer", *args, "--exchange", self.shards[shard][0], "--json", timeout=60)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def open(self, shard: str, market: str, *settings: str) -> dict[str, Any]:
        return self.operator(shard, "market", "open", "--id", market, "--prompt", f"{market}:", *settings)

    def markets(self, shard: str) -> dict[str, dict[str, Any]]:
        return {m["market"]: m for m in self.operator(shard, "markets")["markets"]}

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text()

    def report(self, name: str) -> dict[str, Any]:
        return dict(json.loads((self.directory / f"{name}.json").read_text()))

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.directory.glob("*.log")))


@pytest.fixture
def exchange(postgres_url: str, tmp_path: Path) -> Iterator[Exchange]:
    made = Exchange(postgres_url, tmp_path)
    try:
        yield made
    finally:
        made.stop()


def rounds_of(url: str) -> dict[str, list[int]]:
    """Every market's committed round numbers, in order."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT market, round FROM rounds ORDER BY market, round").fetchall()
    rounds: dict[str, list[int]] = {}
    for market, number in rows:
        rounds.setdefault(market, []).append(number)
    return rounds


def audited(url: str) -> None:
    with PostgresLedger(url) as ledger:
        verdicts, budgets = audit_ledger(ledger)
    assert verdicts and all(v.ok for v in verdicts), [v for v in verdicts if not v.ok][:3]
    assert budgets == []


def owners(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT market, owner FROM leases").fetchall())


# --- the store ------------------------------------------------------------------------------------


def test_an_exchange_on_postgresql_keeps_the_record_the_sqlite_one_keeps(postgres_url: str, tmp_path: Path) -> None:
    run = MarketRun(tmp_path)
    try:
        run.serve("--db", postgres_url, "--max-tokens", "6", "--payment", "critical_bid", "--mode", "stable",
                  "--budget", "4", "--min-agents", "2")  # fmt: skip
        run.agent("alice", *static_agent("a=0.7,b=0.3", 1.0))
        run.agent("bob", *static_agent("b=1", 2.0))
        assert [p.wait(60) for p in run.processes] == [0, 0, 0], run.logs()
    finally:
        run.stop()
    for command in (["ledger"], ["audit"], ["ledger", "--json"]):
        done = run_cli("-m", "auctioneer", *command, "--db", postgres_url)
        assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(done.stdout)
    assert len(document["rounds"]) == 6 and document["closed"] == "max_tokens"
    assert sum(document["balances"].values()) == pytest.approx(
        sum(sum(r["payments"].values()) for r in document["rounds"])
    )
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for table in ("rounds", "bids", "payments", "sponsors"):
            update = (
                f"UPDATE {table} SET round_id = round_id" if table != "rounds" else "UPDATE rounds SET round = round"
            )
            for change in (update, f"DELETE FROM {table}", f"TRUNCATE {table} CASCADE"):
                with pytest.raises(psycopg.errors.RaiseException, match=f"{table} are append-only"):
                    conn.execute(change)
        # A row naming a round that does not exist is refused, with the rows of its statement that do.
        (last,) = conn.execute("SELECT MAX(id) FROM rounds").fetchone()
        for table, row in (("payments", "%s, 'carol', 1.0"), ("sponsors", "%s, 'carol', 1.0")):
            with pytest.raises(psycopg.errors.ForeignKeyViolation, match=f"a row of {table} names round {last + 1}"):
                conn.execute(f"INSERT INTO {table} VALUES ({row}), ({row})", (last, last + 1))
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="a row of bids names round"):
            conn.execute("INSERT INTO bids(round_id, agent, bid, tokens, probs) VALUES (0, 'carol', 1, '', '')")
        assert conn.execute("SELECT COUNT(*) FROM payments WHERE agent = 'carol'").fetchone() == (0,)
        spent, leased, budget = conn.execute(
            "SELECT spent, leased, budget FROM accounts WHERE agent = 'bob'"
        ).fetchone()
    assert spent + leased <= budget + 1e-9  # (and nothing is held once the shard has stopped)
    assert leased == 0


def test_migrate_copies_an_sqlite_exchange_into_postgresql_and_audits_the_copy(
    market_run: MarketRun, postgres_url: str
) -> None:
    market_run.serve("--max-tokens", "5", "--payment", "second_price", "--min-agents", "2", "--budget", "50")
    market_run.agent("alice", *static_agent("a=0.7,b=0.3", 1.0))
    market_run.agent("bob", *static_agent("b=1", 2.0))
    assert [p.wait(60) for p in market_run.processes] == [0, 0, 0], market_run.logs()
    copied = run_cli("-m", "auctioneer", "migrate", "--db", str(market_run.db), "--to", postgres_url)
    assert copied.returncode == 0 and "audit of the copy passed: 5 rounds verified" in copied.stdout, copied.stdout
    with SqliteLedger.open_existing(market_run.db) as source, PostgresLedger(postgres_url) as target:
        assert target.document() == source.document() and target.overview()["accounts"] == source.overview()["accounts"]
        (market,) = source.market_ids()
        assert target.results_since(market, 0, 100, 10**9) == source.results_since(market, 0, 100, 10**9)
    again = run_cli("-m", "auctioneer", "migrate", "--db", str(market_run.db), "--to", postgres_url)
    assert again.returncode == 2 and "already holds markets" in again.stderr


# --- shards ---------------------------------------------------------------------------------------


def test_two_shards_are_one_exchange_and_agents_of_one_trade_on_both(exchange: Exchange) -> None:
    exchange.shard("s1")
    exchange.shard("s2")
    wait_until(lambda: exchange.markets("s1") == {} and exchange.markets("s2") == {}, what="both shards up")
    both = ("--max-tokens", "4", "--min-agents", "2")  # (one agent alone could end every market before the other)
    placed = {name: exchange.open("s1", name, *both)["shard"] for name in ("q1", "q2", "q3", "q4")}
    pinned = exchange.open("s1", "q5", *both, "--shard", "s2")
    assert sorted(placed.values()) == ["s1", "s1", "s2", "s2"] and pinned["shard"] == "s2"
    wait_until(lambda: set(exchange.markets("s2")) == {"q1", "q2", "q3", "q4", "q5"}, what="every market at s2")
    listed = exchange.markets("s1")
    assert {m: listed[m]["shard"] for m in listed} == {**placed, "q5": "s2"}
    # Agents given s1's endpoints only: they trade in every market, wherever it is.
    agents = [exchange.agent(name, "s1", *static_agent(f"{name}=1", 1.0)) for name in ("a", "b")]
    assert [agent.wait(60) for agent in agents] == [0, 0], exchange.logs()
    for name in ("a", "b"):
        report = exchange.report(name)
        assert {m["market"]: m["closed_reason"] for m in report["markets"]} == dict.fromkeys(
            placed | {"q5": 1}, "max_tokens"
        )
        assert report["verification_failures"] == 0
    assert {market: numbers for market, numbers in rounds_of(exchange.url).items()} == {
        market: [1, 2, 3, 4] for market in ("q1", "q2", "q3", "q4", "q5")
    }
    audited(exchange.url)


def test_an_exchange_of_shards_speaks_spec_3_6_on_the_wire(exchange: Exchange) -> None:
    """Raw sockets at shard s1 only, for a market served by s2: where it lives is in the welcome, the
    open's reply and the notices; its bids at s1 are WRONG_SHARD; when s2 dies, s1 announces it again."""
    for name in ("s1", "s2"):
        exchange.shard(name)
    wait_until(lambda: exchange.markets("s1") == {} and exchange.markets("s2") == {}, what="both shards up")
    s1, s2 = exchange.shards["s1"], exchange.shards["s2"]
    feed, client = WireFeed(s1[1], "x"), WireClient(s1[0])
    try:
        time.sleep(0.3)  # the subscription reaches the shard
        status = client.request("open_market", market="w", shard="s2", settings={"prompt": "W:", "min_agents": 5})
        assert status["type"] == "market_status", status
        where = status["status"]["market"]
        assert (where["shard"], where["market_endpoint"]) == ("s2", s2[0])
        opened = feed.next(lambda topic, m: m["type"] == "market_opened" and m["market"]["id"] == "w")
        assert (opened["market"]["shard"], opened["market"]["feed_endpoint"]) == ("s2", s2[1])
        welcome = client.request("hello", name="trader")
        assert {(s["shard"], s["market_endpoint"], s["feed_endpoint"]) for s in welcome["shards"]} == {
            ("s1", *s1),
            ("s2", *s2),
        }
        assert [(m["id"], m["shard"]) for m in welcome["markets"]] == [("w", "s2")]
        refused = client.request("sealed_bid", market="w", round=1, bid=1.0,
                                 distribution={"tokens": ["a"], "probs": [1.0]})  # fmt: skip
        assert refused["code"] == "WRONG_SHARD" and s2[0] in refused["message"], refused
        synced = client.request("sync_request", market="w")  # any shard answers from the shared record
        assert synced["type"] == "sync_reply" and synced["market"] == "w" and synced.get("open_round") is None
        exchange.processes["s2"].kill()  # s2 dies: s1 claims the market once its lease expires
        moved = feed.next(lambda topic, m: m["type"] == "market_opened" and m["market"]["shard"] == "s1")
        assert moved["market"]["id"] == "w" and moved["seq"] > opened["seq"]
    finally:
        feed.close()
        client.close()
    root = jsonschema.Draft202012Validator(protocol_schema())
    for message in [*client.sent, *client.received, *(m for _, m in feed.seen)]:
        root.validate(json_value(message))


def test_a_killed_shards_markets_resume_on_another_and_nobody_is_charged_twice(exchange: Exchange) -> None:
    exchange.shard("s1")
    victim = exchange.shard("s2")
    wait_until(lambda: exchange.markets("s1") == {} and exchange.markets("s2") == {}, what="both shards up")
    for name in ("k1", "k2", "k3", "k4"):
        exchange.open("s1", name, "--max-tokens", "40", "--round-pause", "0.05", "--payment", "first_price")
    agents = [exchange.agent(name, "s1", *static_agent(f"{name}=1", 1.0)) for name in ("a", "b")]
    moved = [m for m, owner in owners(exchange.url).items() if owner == "s2"]
    assert moved, owners(exchange.url)
    wait_until(lambda: all(len(rounds_of(exchange.url).get(m, [])) >= 3 for m in moved), what="rounds on s2")
    before = {m: len(rounds_of(exchange.url)[m]) for m in moved}
    victim.kill()  # kill -9, mid-round
    killed = time.time()
    wait_until(lambda: all(owners(exchange.url).get(m) == "s1" for m in moved if m in owners(exchange.url)), timeout=20,
               what="s1 owning s2's markets")  # fmt: skip
    wait_until(lambda: all(len(rounds_of(exchange.url).get(m, [])) > before[m] for m in moved), timeout=20,
               what="moved markets committing again")  # fmt: skip
    with psycopg.connect(exchange.url) as conn:
        first = conn.execute(
            "SELECT MIN(committed_at) FROM rounds WHERE market = ANY(%s) AND committed_at > %s", (moved, killed)
        ).fetchone()[0]
    print(f"\nfailover: first round of a moved market committed {first - killed:.2f} s after kill -9 (lease {LEASE} s)")
    assert first - killed <= 2 * float(LEASE) + 2.0  # the lease, a pass, and the agents' move
    assert [agent.wait(90) for agent in agents] == [0, 0], exchange.logs()
    for market, numbers in rounds_of(exchange.url).items():
        assert numbers == list(range(1, len(numbers) + 1)), f"market {market} lost or repeated a round"
    audited(exchange.url)  # every payment once: each round's rows are unique, and replay to the mechanism


def test_a_shard_paused_past_its_lease_commits_nothing_more(exchange: Exchange) -> None:
    exchange.shard("s1")
    paused = exchange.shard("s2")
    wait_until(lambda: exchange.markets("s1") == {} and exchange.markets("s2") == {}, what="both shards up")
    for name in ("p1", "p2"):
        exchange.open("s1", name, "--max-tokens", "1000", "--round-pause", "0.05", "--shard", "s2")
    agents = [exchange.agent(name, "s1", *static_agent(f"{name}=1", 1.0), "--stay") for name in ("a", "b")]
    wait_until(lambda: all(len(rounds_of(exchange.url).get(m, [])) >= 3 for m in ("p1", "p2")), what="rounds on s2")
    paused.send_signal(signal.SIGSTOP)
    # As if s2 had stopped in the middle of a commit's pipeline (where PostgreSQL's idle timeout does
    # not reach): one of its sessions holds its leases' rows in an open transaction.
    stuck = psycopg.connect(exchange.url, application_name=f"{SHARD_APPLICATION}s2")
    stuck.execute("SELECT market FROM leases WHERE owner = 's2' FOR UPDATE SKIP LOCKED")
    wait_until(lambda: set(owners(exchange.url).values()) == {"s1"}, timeout=20, what="s1 taking the markets")
    with pytest.raises(psycopg.OperationalError):
        stuck.execute("SELECT 1")  # s1 ended the stopped shard's transaction
    stuck.close()
    ended = r"ended \d+ transaction\(s\) of shard\(s\) that stopped renewing their leases: s2"
    assert re.search(ended, " ".join(exchange.log("s1").split()))
    wait_until(lambda: all(len(rounds_of(exchange.url)[m]) >= 5 for m in ("p1", "p2")), what="rounds on s1")
    paused.send_signal(signal.SIGCONT)
    wait_until(lambda: "served by another shard now" in exchange.log("s2"), timeout=20, what="s2 letting go")
    time.sleep(2.0)  # s2 keeps running: whatever it had decided while paused it did not commit
    assert paused.poll() is None and set(owners(exchange.url).values()) == {"s1"}
    for market, numbers in rounds_of(exchange.url).items():
        assert numbers == list(range(1, len(numbers) + 1)), market
    for agent in agents:
        agent.terminate()
    audited(exchange.url)


def commits_waiting_on_a_lock(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_shard_answers_while_its_commit_waits_and_holds_operators_until_it_is_done(exchange: Exchange) -> None:
    """A tick's commit is awaited on the event loop: while the database keeps it waiting (a row it
    writes locked by another session), the shard answers requests; an operator's request waits for
    the commit, then sees the settled exchange."""
    exchange.shard("s1")
    wait_until(lambda: exchange.markets("s1") == {}, what="the shard up")
    exchange.open("s1", "c", "--max-tokens", "1000", "--round-pause", "0.05")
    agent = exchange.agent("a", "s1", *static_agent("a=1", 1.0), "--stay")
    wait_until(lambda: len(rounds_of(exchange.url).get("c", [])) >= 3, what="rounds committed")
    client, operator = WireClient(exchange.shards["s1"][0]), WireClient(exchange.shards["s1"][0])
    closed: list[dict[str, Any]] = []
    closing = threading.Thread(target=lambda: closed.append(operator.request("close_market", timeout=60, market="c")))
    try:
        with psycopg.connect(exchange.url) as blocker:
            blocker.execute("SELECT value FROM meta WHERE key = 'commits' FOR UPDATE")  # every commit counts itself
            wait_until(lambda: commits_waiting_on_a_lock(exchange.url) == 1, what="a commit waiting on the lock")
            held_at = len(rounds_of(exchange.url)["c"])
            assert client.request("hello", name="watcher")["type"] == "welcome"
            assert client.request("ping")["type"] == "pong"
            assert client.request("sync_request", market="c")["type"] == "sync_reply"
            closing.start()
            closing.join(1.0)
            assert closing.is_alive() and not closed  # held while the commit waits
            assert commits_waiting_on_a_lock(exchange.url) == 1 and len(rounds_of(exchange.url)["c"]) == held_at
        # The blocker's transaction ends: the commit goes through, then the close is answered.
        closing.join(60)
        assert closed and closed[0]["type"] == "market_status", closed
        assert closed[0]["status"]["closed"] is not None, closed
    finally:
        client.close()
        operator.close()
        agent.terminate()
    numbers = rounds_of(exchange.url)["c"]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) > held_at
    audited(exchange.url)


def test_postgresql_restarted_under_load_loses_no_acknowledged_round(tmp_path: Path) -> None:
    with PostgresServer() as server:
        made = Exchange(server.url, tmp_path)
        try:
            made.shard("s1")
            wait_until(lambda: made.markets("s1") == {}, what="the shard up")
            made.open("s1", "r1", "--max-tokens", "60", "--round-pause", "0.05", "--min-agents", "2")
            agents = [made.agent(name, "s1", *static_agent(f"{name}=1", 1.0)) for name in ("a", "b")]
            wait_until(lambda: len(rounds_of(server.url).get("r1", [])) >= 10, what="rounds")
            restarted = time.time()
            server.restart()  # the database goes away under load, and comes back
            assert [agent.wait(120) for agent in agents] == [0, 0], made.logs()
            numbers = rounds_of(server.url)["r1"]
            assert numbers == list(range(1, 61))
            for name in ("a", "b"):
                seen = {r["round"] for m in made.report(name)["markets"] for r in m["rounds"] if r["token"]}
                assert seen <= set(numbers) and len(seen) >= 50  # every result it saw is in the ledger
            with psycopg.connect(server.url) as conn:
                after = conn.execute("SELECT COUNT(*) FROM rounds WHERE committed_at > %s", (restarted,)).fetchone()
            assert after is not None and after[0] >= 10  # the shard went on committing on the restarted server
            audited(server.url)
        finally:
            made.stop()


def test_one_agent_bidding_on_every_shard_never_overspends_its_budget(exchange: Exchange) -> None:
    budget = 12.0
    exchange.shard("s1", "--budget", str(budget), "--payment", "first_price")
    exchange.shard("s2", "--budget", str(budget), "--payment", "first_price")
    wait_until(lambda: exchange.markets("s1") == {} and exchange.markets("s2") == {}, what="both shards up")
    for name in ("b1", "b2", "b3", "b4", "b5", "b6"):
        exchange.open("s1", name, "--max-tokens", "30", "--round-pause", "0.02", "--max-idle-rounds", "1000")
    seen: list[tuple[float, float, float]] = []
    watching = threading.Event()

    def watch() -> None:  # the invariant, at every moment we can see, from the store itself
        with psycopg.connect(exchange.url, autocommit=True) as conn:
            while not watching.is_set():
                row = conn.execute("SELECT spent, leased, budget FROM accounts WHERE agent = 'spender'").fetchone()
                if row is not None:
                    seen.append(row)
                time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        spender = exchange.agent("spender", "s1", *static_agent("s=1", 1.0), "--stay")
        wait_until(lambda: "BUDGET_EXCEEDED" in exchange.log("spender"), timeout=60, what="the budget running out")
        time.sleep(3.0)  # idle slices go back to the account; bids keep coming and being refused
    finally:
        watching.set()
        watcher.join()
        spender.terminate()
    assert seen and all(spent + leased <= budget + 1e-9 for spent, leased, _ in seen)
    with PostgresLedger(exchange.url) as ledger:
        spent = ledger.spent()["spender"]
    assert budget - 2.0 <= spent <= budget  # refused only once (nearly) all of it was spent, exchange-wide
    shards_charged = {owner for market, owner in owners(exchange.url).items()}
    assert shards_charged == {"s1", "s2"}
    audited(exchange.url)
