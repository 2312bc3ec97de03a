"""The benchmark harness itself, at toy sizes: every run completes, baselines match the market's traffic.

No timing is asserted (the machines are noisy); what is checked is that the figures are measured
from complete runs, so the ratios in the README mean what they say.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from contextlib import closing
from pathlib import Path

import msgpack
import pytest
import zmq

import benchmarks.__main__ as benchmarks_main
from auctioneer.ledger import Ledger
from benchmarks.agent_runtime import with_agent_processes, with_driver
from benchmarks.exchange import run_exchange, run_single
from benchmarks.instructions import Count, callgrind_total, per_round
from benchmarks.load import MARKET_TOPICS, ReplyWaiter, bid_payloads, bid_rounds, connect_subscriber, open_round
from benchmarks.market import market_figures, measure, median_run
from benchmarks.profile_market import (
    SamplerError,
    Share,
    exchange_workload,
    market_workload,
    print_profile,
    profile_with_cprofile,
    sample_with_py_spy,
    sampled_shares,
)
from simulation.processes import LocalMarket
from tests.helpers import wait_until

ROUNDS = 10


def test_market_and_its_floors_complete_every_round_with_the_same_traffic(tmp_path: Path) -> None:
    runs = measure(agents=3, support=8, rounds=ROUNDS, repeats=1, scratch=tmp_path)

    assert set(runs) == {"market", "floor", "validated", "durable"}
    for results in runs.values():
        (result,) = results
        assert (result.rounds, result.lost_messages) == (ROUNDS, 0)
        assert len(result.latencies) == ROUNDS and result.seconds > 0
    market, floor = runs["market"][0], runs["floor"][0]
    # The floor pads its result to the market's size (the msgpack envelope differs by a few bytes).
    assert abs(floor.result_bytes - market.result_bytes) < 64

    # The durable floor committed every bid, a round per transaction.
    with contextlib.closing(sqlite3.connect(tmp_path / "0" / "durable-floor.db")) as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT round) FROM bids").fetchone() == (3 * ROUNDS, ROUNDS)
    validated, durable = runs["validated"][0], runs["durable"][0]
    figures = {f.key: f.value for f in market_figures("tiny", "N=3 K=8", market, floor, validated, durable, 0)}
    ratios = ("market_over_floor", "validated_over_floor", "market_over_validated", "market_over_durable_floor")
    for key in (f"{ratio}_tiny" for ratio in ratios):
        assert math.isfinite(figures[key]) and figures[key] > 0
    assert figures["lost_messages_tiny"] == 0


def test_the_driver_asks_for_a_first_round_it_missed(tmp_path: Path) -> None:
    market = LocalMarket()
    market.start_auctioneer(tmp_path / "ledger.db", ["--prompt", "", "--max-tokens", "3", "--round-timeout", "30"])
    context = zmq.Context()
    try:
        dealer = context.socket(zmq.DEALER)
        dealer.connect(market.market)
        dealer.send(msgpack.packb({"v": 1, "type": "hello", "name": "late", "id": 0}))
        assert dealer.poll(30_000), "no welcome"
        dealer.recv()
        wait_until(lambda: open_round(dealer, 30.0) is not None, what="the first round open")
        subscriber = context.socket(zmq.SUB)  # connected after the first round_open went out
        subscriber.setsockopt(zmq.SUBSCRIBE, MARKET_TOPICS)
        connect_subscriber(subscriber, market.feed, 30.0)
        with closing(ReplyWaiter([dealer])) as replies:
            result = bid_rounds(subscriber, [dealer], replies, bid_payloads(1, 2), 3, 30.0)
    finally:
        context.destroy(linger=0)
        market.stop()

    assert result.asked_first_round
    assert (result.rounds, result.lost_messages) == (3, 0)


def test_median_run_ignores_runs_that_completed_no_round(tmp_path: Path) -> None:
    runs = measure(agents=3, support=2, rounds=ROUNDS, repeats=1, scratch=tmp_path)
    completed = runs["market"][0]
    failed = type(completed)()  # a run that never saw a round: no figure may come from it

    assert median_run([failed, completed, failed]) is completed
    assert math.isnan(market_figures("x", "x", failed, completed, completed, completed, 0)[0].value)


def test_profile_market_profiles_a_whole_market(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "serve.prof"

    assert profile_with_cprofile(*market_workload(agents=3, support=8, rounds=ROUNDS), output) == ROUNDS

    print_profile(output, ROUNDS, limit=60)
    printed = capsys.readouterr().out
    assert "tick" in printed and "decide" in printed and "decode" in printed and " commit" in printed


def test_py_spy_samples_the_exchange_while_it_trades(tmp_path: Path) -> None:
    output = tmp_path / "serve.raw"

    try:
        completed = sample_with_py_spy(*exchange_workload(markets=300, rounds=4, scratch=tmp_path), output)
    except SamplerError as exc:
        if "ermission" not in str(exc):
            raise
        pytest.skip(f"this machine does not let py-spy read another process: {exc}")
    assert completed == 1200

    shares = {share.function: share for share in sampled_shares(output.read_text().splitlines())}
    for function in ("AuctioneerServer._answer", "Exchange.tick_async", "Market.decide", "SqliteLedger.commit"):
        assert 0 < shares[function].inclusive < 1
    assert all(0 <= share.own <= share.inclusive <= 1 for share in shares.values())


def test_sampled_shares_count_the_event_loops_work_once_per_stack() -> None:
    loop = "main (a.py:1);BaseEventLoop._run_once (b.py:2);Handle._run (c.py:3)"
    raw = [
        f"{loop};f (m.py:4);g (m.py:5);f (m.py:6) 3",  # f calls g calls f: f counts once
        f"{loop};h (m.py:7) 1",
        "main (a.py:1);import_everything (a.py:9) 6",  # not the loop's work: left out
    ]
    assert sampled_shares(raw) == [Share("f", 0.75, 0.75), Share("g", 0.75, 0.0), Share("h", 0.25, 0.25)]
    assert sampled_shares(raw[2:]) == []


def test_instructions_per_round_cancel_start_up_out(tmp_path: Path) -> None:
    output = tmp_path / "callgrind.out"
    output.write_text("# callgrind format\nversion: 1\ncmd: python\nevents: Ir\nsummary: 5233213494\n\nfn=main\n")
    assert callgrind_total(output) == 5_233_213_494
    assert per_round(Count(5_200_000_000, 1500), Count(9_800_000_000, 4500)) == pytest.approx(4_600_000_000 / 3000)
    with pytest.raises(ValueError, match="longer run completed 1500"):
        per_round(Count(5_200_000_000, 1500), Count(5_300_000_000, 1500))  # a stalled run is no count
    output.write_text("events: Ir\n")
    with pytest.raises(ValueError, match="no summary"):
        callgrind_total(output)


def test_the_exchange_benchmark_measures_complete_runs(tmp_path: Path) -> None:
    load, fsyncs = run_exchange(markets=30, rounds=2, scratch=tmp_path, run=0)
    assert (load.rounds, load.lost_messages) == (60, 0)
    assert len(load.latencies) == 60 and load.seconds > 0 and load.peak_rss > 0
    assert 0 < fsyncs < 1  # rounds were grouped into fewer commits
    single = run_single(rounds=20, scratch=tmp_path, run=0)
    assert (single.rounds, single.lost_messages) == (20, 0)


def test_the_agent_runtime_benchmark_counts_every_round_its_agent_processes_traded(tmp_path: Path) -> None:
    rate, committed, cpu = with_agent_processes(markets=20, rounds=3, scratch=tmp_path, name="agents")
    assert committed == 60 and rate > 0
    assert cpu > 0  # read from the agent processes while they ran (an ended process cannot be asked)
    with Ledger.open_existing(tmp_path / "agents.db") as ledger:
        bidders = [{b.agent for b in stored.bids} for market in ledger.market_ids() for stored in ledger.rounds(market)]
    assert len(bidders) == 60 and all(agents == {"agent0", "agent1", "agent2"} for agents in bidders)
    assert with_driver(markets=20, rounds=3, scratch=tmp_path, name="driver") > 0


def test_a_section_whose_packages_are_missing_is_skipped_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[str] = []
    monkeypatch.setitem(benchmarks_main.NEEDS, "llm", (("no_such_package_anywhere",), "pip install it"))
    monkeypatch.setitem(benchmarks_main.SECTIONS, "llm", lambda quick: ran.append("llm") or [])
    monkeypatch.setattr("sys.argv", ["benchmarks", "--only", "llm", "--quick"])
    assert benchmarks_main.main() == 0
    assert ran == []
    assert "skipped llm: needs no_such_package_anywhere (pip install it)" in capsys.readouterr().out
