"""The exchange with real processes: operators, many markets at once, budgets across them, and a
client of revision 1.2 that knows nothing of markets."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from auctioneer.ledger import Ledger
from protocol.sockets import free_tcp_endpoint
from tests.helpers import MarketRun, run_cli, static_agent, wait_until


def operator(market_run: MarketRun, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("-m", "auctioneer", *args, "--exchange", market_run.market, "--json")


def open_market(market_run: MarketRun, *settings: str) -> dict[str, Any]:
    result = operator(market_run, "market", "open", *settings)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def markets(market_run: MarketRun) -> dict[str, dict[str, Any]]:
    result = operator(market_run, "markets")
    assert result.returncode == 0, result.stderr
    return {m["market"]: m for m in json.loads(result.stdout)["markets"]}


def overview(db: Path) -> dict[str, Any]:
    with Ledger.open_existing(db) as ledger:
        return ledger.overview()


def test_operators_open_and_close_markets_and_agents_trade_in_all(market_run: MarketRun) -> None:
    market_run.serve("--prompt", "Default:", "--max-tokens", "2", "--stay", "--budget", "50")
    alice = market_run.agent("alice", *static_agent("a=0.6,b=0.4", 1), "--stay")
    bob = market_run.agent("bob", *static_agent("b=1", 2), "--stay")
    hawaii = open_market(market_run, "--id", "hawaii", "--prompt", "Vacations in Hawaii:", "--max-tokens", "3")
    assert (hawaii["market"], hawaii["closed"], hawaii["settings"]["max_tokens"]) == ("hawaii", None, 3)
    only_bob = open_market(market_run, "--prompt", "Bob:", "--max-tokens", "2", "--agents", "bob", "--payment", "none")
    assert only_bob["agents"] == ["bob"] and only_bob["settings"]["payment"] == "none"
    endless = open_market(market_run, "--prompt", "Endless:", "--max-tokens", "1000")
    wait_until(lambda: markets(market_run)["hawaii"]["closed"] == "max_tokens", what="hawaii to close")
    wait_until(lambda: markets(market_run)[only_bob["market"]]["closed"] == "max_tokens", what="bob's market")
    closed = operator(market_run, "market", "close", endless["market"])
    assert closed.returncode == 0 and json.loads(closed.stdout)["closed"] == "operator"
    refused = operator(market_run, "market", "close", endless["market"])
    assert refused.returncode == 2 and "MARKET_CLOSED" in refused.stderr
    wait_until(lambda: len([m for m in markets(market_run).values() if m["closed"]]) == 4, what="every market")
    raised = operator(market_run, "budget", "alice", "80")
    assert raised.returncode == 0, raised.stderr
    alice_account = json.loads(raised.stdout)
    assert alice_account["budget"] == 80.0 and alice_account["remaining"] == 80.0 - alice_account["spent"]
    too_low = operator(market_run, "budget", "bob", "0")  # bob has paid in the markets above
    assert too_low.returncode == 2 and "INVALID_SETTINGS" in too_low.stderr and "Traceback" not in too_low.stderr
    for agent in (alice, bob):
        agent.terminate()
        assert agent.wait(30) == 0
    exchange = overview(market_run.db)
    by_id = {m["market"]: m for m in exchange["markets"]}
    assert by_id["hawaii"]["rounds"] == 3 and by_id["hawaii"]["text"].startswith("Vacations in Hawaii:")
    with Ledger.open_existing(market_run.db) as ledger:
        bob_market = ledger.document(only_bob["market"])
    assert all(set(r["bids"]) == {"bob"} for r in bob_market["rounds"])
    accounts = exchange["accounts"]
    assert accounts["alice"]["budget"] == 80.0 and accounts["alice"]["reserved"] == 0.0
    assert accounts["bob"]["budget"] == 50.0
    assert accounts["bob"]["spent"] == pytest.approx(
        sum(m["revenue"] for m in exchange["markets"]) - accounts["alice"]["spent"]
    )
    audit = run_cli("-m", "auctioneer", "audit", "--db", str(market_run.db))
    assert audit.returncode == 0 and "every budget kept" in audit.stdout, audit.stdout
    shown = run_cli("-m", "auctioneer", "ledger", "--db", str(market_run.db), "--market", "hawaii", "--json")
    assert json.loads(shown.stdout)["market"] == "hawaii"
    count = exchange["market_count"]
    assert count == len(exchange["markets"]) >= 3  # JSON lists every market unless told otherwise
    last = json.loads(run_cli("-m", "auctioneer", "ledger", "--db", str(market_run.db), "--json", "--last", "1").stdout)
    assert last["market_count"] == count
    assert [m["market"] for m in last["markets"]] == [exchange["markets"][-1]["market"]]  # the one opened last
    table = run_cli("-m", "auctioneer", "ledger", "--db", str(market_run.db), "--last", "2")
    assert f"{count} markets" in table.stdout and "the last 2 opened; --last 0 lists every market" in table.stdout


def test_operator_requests_are_refused_from_elsewhere_and_for_bad_settings(market_run: MarketRun) -> None:
    (market_run.directory / "exchange.toml").write_text('operator_networks = ["10.0.0.0/8"]\n')
    market_run.serve("--config", str(market_run.directory / "exchange.toml"))
    for request in (("market", "open", "--prompt", "x"), ("budget", "alice", "1e9")):
        refused = operator(market_run, *request)
        assert refused.returncode == 2 and "UNAUTHORIZED" in refused.stderr and "Traceback" not in refused.stderr
    market_run.stop()
    silent = run_cli(
        "-m", "auctioneer", "market", "open", "--exchange", market_run.market, "--prompt", "x", "--timeout", "0.5"
    )
    assert silent.returncode == 2 and "no answer from the exchange" in silent.stderr


def test_a_revision_1_2_client_trades_in_the_default_market_beside_others(market_run: MarketRun) -> None:
    """A client written from revision 1.2 of SPEC.md: no market ids, one feed subscription to
    everything, plain msgpack frames (it skips what it cannot decode)."""
    rounds = 4
    market_run.serve("--prompt", "Old:", "--min-agents", "1", "--max-tokens", str(rounds), "--round-timeout", "2")
    other = open_market(market_run, "--prompt", "New:", "--max-tokens", "50", "--round-timeout", "0.2")
    market_run.agent("modern", *static_agent("n=1", 1), "--stay")
    context = zmq.Context()
    dealer, feed = context.socket(zmq.DEALER), context.socket(zmq.SUB)
    for sock in (dealer, feed):
        sock.setsockopt(zmq.LINGER, 0)
    feed.setsockopt(zmq.SUBSCRIBE, b"")
    feed.connect(market_run.feed)
    dealer.connect(market_run.market)

    def request(body: dict[str, Any]) -> dict[str, Any]:
        dealer.send(msgpack.packb({"v": 1, **body}))
        assert dealer.poll(10_000), "no reply"
        return dict(msgpack.unpackb(dealer.recv()))

    seen: list[dict[str, Any]] = []
    undecodable = 0
    try:
        time.sleep(0.3)
        welcome = request({"type": "hello", "name": "oldtimer", "id": 1})
        assert welcome["type"] == "welcome" and welcome["prompt"] == "Old:"
        assert welcome["mechanism"]["aggregation"] == "linear" and welcome["max_support"] == 4096
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert feed.poll(10_000), "the feed went silent"
            try:
                message = dict(msgpack.unpackb(feed.recv()))
            except Exception:
                undecodable += 1  # another market's frames (and topic copies): not for this client
                continue
            seen.append(message)
            if message["type"] == "round_open":
                distribution = {"tokens": ["o"], "probs": [1.0]}
                reply = request(
                    {"type": "sealed_bid", "round": message["round"], "bid": 1.0, "distribution": distribution}
                )
                assert reply["type"] == "bid_accepted", reply
            if message["type"] == "market_closed":
                break
    finally:
        context.destroy(linger=0)
    assert undecodable > 0, "the other market's traffic never reached the feed (the test proves nothing)"
    plain = [m for m in seen if m["type"] in ("round_open", "round_result", "market_closed")]
    assert [m["seq"] for m in plain] == list(range(plain[0]["seq"], plain[0]["seq"] + len(plain)))
    assert {m.get("market") for m in plain} == {welcome["market"]} != {other["market"]}
    assert [m["round"] for m in plain if m["type"] == "round_result"] == list(range(1, rounds + 1))
    with Ledger.open_existing(market_run.db) as ledger:
        old = ledger.document(welcome["market"])
    # The default market invites every agent: the modern one may bid there too, with its "n".
    assert len(old["rounds"]) == rounds and all("oldtimer" in r["bids"] for r in old["rounds"])
    assert old["text"].startswith("Old:") and set(old["text"][4:]) <= {"o", "n"}


def test_many_markets_every_round_and_bid_accounted_for(market_run: MarketRun) -> None:
    count, rounds, agents = 200, 3, 3
    config = "".join(f'[[markets]]\nid = "m{k:03d}"\nprompt = ""\n' for k in range(count))
    (market_run.directory / "markets.toml").write_text(f"max_tokens = {rounds}\nmin_agents = {agents}\n" + config)
    # As flags, since flags override the config file (the harness passes a 1 s round timeout): every
    # bid must arrive in its round even when the machine is busy with other tests' processes.
    patient = ["--round-timeout", "30", "--heartbeat", "1"]
    market_run.serve("--config", str(market_run.directory / "markets.toml"), *patient)
    swarm = market_run.swarms(1, agents, "--support", "4")
    assert swarm[0].wait(180) == 0, market_run.logs()[-3000:]
    assert market_run.processes[0].wait(60) == 0, market_run.logs()[-3000:]
    with Ledger.open_existing(market_run.db) as ledger:
        stored = ledger.markets()
        commits = ledger.commits()
        assert len(stored) == count and all(m.closed and m.closed.reason == "max_tokens" for m in stored)
        for market in stored:
            committed = list(ledger.rounds(market.id))
            assert [r.round for r in committed] == list(range(1, rounds + 1))
            assert all(len(r.bids) == agents for r in committed), market.id
    for report in market_run.swarm_reports(1):
        assert report["markets"] == count and report["results"] == count * rounds
        assert report["statuses"] == {"accepted": count * rounds} and report["verification_failures"] == 0
    # Rounds complete as the agents' bids arrive; those completed while a commit is being written
    # share the next one (the benchmark measures it with the auctioneer saturated).
    assert commits < count * rounds / 2, f"{commits} commits for {count * rounds} rounds: no group commit"
    audit = run_cli("-m", "auctioneer", "audit", "--db", str(market_run.db))
    assert audit.returncode == 0, audit.stdout[-2000:]


def test_watch_follows_a_named_market(market_run: MarketRun) -> None:
    market_run.serve("--prompt", "Default:", "--max-tokens", "50", "--round-timeout", "0.3")
    named = open_market(market_run, "--id", "named", "--prompt", "Named:", "--max-tokens", "3", "--round-pause", "0.2")
    # (asked while no agent trades, so the exchange is surely still up: one that ended is waited for)
    unknown = run_cli(
        "-m", "auctioneer", "watch", "--feed", market_run.feed, "--market", market_run.market, "--market-id", "nosuch"
    )  # fmt: skip
    assert unknown.returncode == 2 and "UNKNOWN_MARKET: no market 'nosuch'" in unknown.stderr, unknown.stderr
    market_run.agent("a", *static_agent("w=1", 1), "--stay")
    spectator = subprocess.run(
        [sys.executable, "-m", "auctioneer", "watch", "--feed", market_run.feed, "--market", market_run.market,
         "--market-id", named["market"]],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert spectator.returncode == 0, spectator.stderr
    assert "market closed (max_tokens) after 3 rounds" in spectator.stdout and "Named:www" in spectator.stdout


def test_a_publishers_agent_is_a_markets_live_reference_and_never_pays(market_run: MarketRun) -> None:
    market_run.serve("--payment", "first_price", "--mode", "greedy", "--reference-weight", "3", default_market=False)
    publisher = market_run.agent("publisher", *static_agent(" news=1", 50))
    advertiser = market_run.agent("advertiser", *static_agent(" ad=1", 1))
    market = open_market(
        market_run, "--prompt", "Q:", "--max-tokens", "3", "--min-agents", "2", "--reference-agent", "publisher"
    )
    assert market["reference_agent"] == "publisher"
    # both exit 0: the market closed and every result verified (the publisher checks no charge of its own)
    assert [publisher.wait(60), advertiser.wait(60)] == [0, 0], market_run.logs()
    with Ledger.open_existing(market_run.db) as ledger:
        rounds = list(ledger.rounds(market["market"]))
        spent = ledger.spent()
    for stored in rounds:
        # q = (3 news + 1 ad) / 4: the publisher's weight decides the word; only the advertiser pays
        assert stored.token == " news" and stored.payments == {"advertiser": 1.0}
        assert [(b.agent, b.bid, b.reference) for b in stored.bids] == [
            ("advertiser", 1.0, False),
            ("publisher", 3.0, True),
        ]
    assert "publisher" not in spent
    assert run_cli("-m", "auctioneer", "audit", "--db", str(market_run.db)).returncode == 0


def test_an_agent_learns_its_market_is_gone_and_trades_in_what_the_exchange_holds(market_run: MarketRun) -> None:
    market_run.serve("--stay", default_market=False)
    trading = open_market(
        market_run, "--id", "trading", "--prompt", "Q:", "--max-tokens", "1000", "--round-pause", "0.05"
    )
    agent = market_run.agent("a", *static_agent("w=1", 1), "--stay")
    wait_until(lambda: markets(market_run)["trading"]["round"] > 2, what="rounds in the market")
    market_run.processes[0].kill()  # the exchange's host comes back with another (empty) ledger
    market_run.processes[0].wait()
    market_run.db.unlink()
    market_run.serve("--stay", default_market=False)
    fresh = open_market(market_run, "--id", "fresh", "--prompt", "F:", "--max-tokens", "3")
    wait_until(
        lambda: markets(market_run)["fresh"]["closed"] == "max_tokens", what="the agent trading in the new market"
    )
    assert agent.poll() is None  # --stay: still there, for the markets to come
    log = (market_run.directory / "a.log").read_text()
    assert f"market {trading['market']} is unknown to the exchange" in log and "Traceback" not in log, log[-2000:]
    with Ledger.open_existing(market_run.db) as ledger:
        assert all(set(r.payments) == {"a"} for r in ledger.rounds(fresh["market"]))


def test_a_second_exchange_on_a_served_ledger_is_refused_and_writes_nothing(market_run: MarketRun) -> None:
    market_run.serve("--stay", default_market=False)
    first = open_market(market_run, "--id", "first", "--prompt", "Q:", "--max-tokens", "3")
    config = market_run.directory / "second.toml"
    config.write_text('[[markets]]\nid = "second"\nprompt = "R:"\n')
    second = run_cli(
        "-m", "auctioneer", "serve", "--db", str(market_run.db), "--config", str(config),
        "--market", free_tcp_endpoint(), "--feed", free_tcp_endpoint(),
    )  # fmt: skip
    pid = market_run.processes[0].pid
    assert second.returncode == 2, second.stderr
    assert f"another exchange (pid {pid}) is serving {market_run.db}" in second.stderr
    assert list(markets(market_run)) == [first["market"]]
    with Ledger.open_existing(market_run.db) as ledger:
        assert ledger.market_ids() == [first["market"]]  # the second exchange opened nothing
    market_run.agent("a", *static_agent("w=1", 1))
    wait_until(lambda: markets(market_run)[first["market"]]["closed"] is not None, what="the first market's end")
    market_run.processes[0].terminate()
    assert market_run.processes[0].wait(20) == 0
    market_run.serve("--stay", default_market=False)  # the lock went with the process that held it
    markets(market_run)  # (asserts the restarted exchange answers)
    assert market_run.processes[-1].poll() is None


def test_watch_without_a_market_id_needs_a_default_or_an_only_market(market_run: MarketRun) -> None:
    market_run.serve("--stay", default_market=False)
    open_market(market_run, "--prompt", "A:")
    open_market(market_run, "--prompt", "B:")
    watch = run_cli("-m", "auctioneer", "watch", "--feed", market_run.feed, "--market", market_run.market)
    assert watch.returncode == 2 and "the exchange has 2 markets and no default one: name one" in watch.stderr
    assert "Traceback" not in watch.stderr
