"""The market CLIs as users run them: demo, serve with a config file, ledger, and their one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from auctioneer.exchange import Exchange
from auctioneer.ledger import Ledger
from auctioneer.settings import ServeSettings
from protocol import Distribution
from protocol.messages import BidAccepted, Hello, SealedBid
from protocol.sockets import endpoint_problem
from tests.helpers import MarketRun, read_ledger, run_cli, static_agent


def test_demo_reproduces_the_article_live(tmp_path: Path) -> None:
    result = run_cli("-m", "auctioneer", "demo", "--db", str(tmp_path / "demo.db"), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "round 1 aggregate: ' Generative' 0.44, ' Large' 0.56" in result.stdout
    ledger = read_ledger(tmp_path / "demo.db")
    first = ledger["rounds"][0]
    assert first["distribution"] == pytest.approx({" Large": 0.56, " Generative": 0.44})
    assert first["payments"] == {"agent1": 1.0, "agent2": 2.0, "agent3": 2.0}
    assert ledger["text"].startswith("Mechanism Design for ") and ledger["text"].endswith(".")
    assert f"final text: {ledger['text']}" in result.stdout


def test_demo_takes_the_mechanism_flags(tmp_path: Path) -> None:
    result = run_cli(
        "-m",
        "auctioneer",
        "demo",
        "--db",
        str(tmp_path / "d.db"),
        "--payment",
        "second_price",
        "--max-tokens",
        "2",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    first = read_ledger(tmp_path / "d.db")["rounds"][0]
    assert 0 < first["payments"]["agent2"] < 2.0


def test_serve_reads_a_config_file_and_flags_win(market_run: MarketRun, tmp_path: Path) -> None:
    config = tmp_path / "market.toml"
    config.write_text('prompt = "From config:"\nmax_tokens = 9\npayment = "none"\nmin_agents = 1\n')
    market_run.serve("--config", str(config), "--max-tokens", "2")
    market_run.agent("a", *static_agent("x=1", 5))
    assert market_run.wait(60) == [0, 0], market_run.logs()
    ledger = read_ledger(market_run.db)
    assert ledger["text"] == "From config:xx"
    assert ledger["rounds"][0]["payments"] == {"a": 0.0} and ledger["balances"] == {}  # only who paid


def test_ledger_json_into_a_pipe_closed_early_stops_quietly(tmp_path: Path) -> None:
    db = tmp_path / "wide.db"
    with Ledger(db) as ledger:
        exchange = Exchange(ServeSettings(db=db, prompt="", max_tokens=1, min_agents=1), ledger)
        exchange.start()
        exchange.handle(b"a", Hello(name="a"))
        exchange.tick()
        wide = Distribution.from_mapping({f"t{k}": 1 / 4096 for k in range(4096)})
        assert isinstance(exchange.handle(b"a", SealedBid(round=1, distribution=wide, bid=1.0)), BidAccepted)
        exchange.tick()
    command = f"{sys.executable} -m auctioneer ledger --db {db} --json | head -c 100"
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
    assert len(result.stdout) == 100 and result.stderr == ""


def test_ledger_json_and_table(market_run: MarketRun) -> None:
    market_run.serve("--min-agents", "1", "--max-tokens", "2", "--prompt", "Hi")
    market_run.agent("a", *static_agent("!=1", 1.5))
    assert market_run.wait(60) == [0, 0]
    as_json = run_cli("-m", "auctioneer", "ledger", "--db", str(market_run.db), "--json")
    document = json.loads(as_json.stdout)
    assert document["text"] == "Hi!!" and document["balances"] == {"a": 3.0}
    assert document["rounds"][1]["bids"] == {"a": {"bid": 1.5, "distribution": {"!": 1.0}}}
    assert set(document["rounds"][0]) == {
        "sponsors",
        "round",
        "token",
        "distribution",
        "bids",
        "payments",
        "seed",
        "seed_commitment",
    }
    table = run_cli("-m", "auctioneer", "ledger", "--db", str(market_run.db))
    assert table.returncode == 0 and "balances" in table.stdout and "'Hi!!'" in table.stdout


def test_custom_agent_from_examples(market_run: MarketRun) -> None:
    market_run.serve("--min-agents", "2", "--max-tokens", "3")
    market_run.agent(
        "leader", "--agent", "examples.my_agent:EchoTheLeader", "--param", "fallback=z", "--param", "bid=2"
    )
    market_run.agent("other", *static_agent("y=1", 1))
    assert market_run.wait(60) == [0, 0, 0], market_run.logs()
    rounds = read_ledger(market_run.db)["rounds"]
    assert rounds[0]["bids"]["leader"]["distribution"] == {"z": 1.0}
    assert set(rounds[1]["bids"]["leader"]["distribution"]) <= {"y", "z"}


@pytest.mark.parametrize(
    "argv,message",
    [
        (["-m", "auctioneer", "serve", "--payment", "vickrey"], "invalid choice"),
        (["-m", "auctioneer", "serve", "--seed", "nothex", "--db", "/tmp/x-never.db"], "setting seed"),
        (["-m", "auctioneer", "serve", "--config", "/nonexistent.toml"], "cannot read config"),
        (["-m", "auctioneer", "serve", "--payment", "critical_bid"], "critical_bid needs mode greedy or stable"),
        (["-m", "auctioneer", "ledger", "--db", "/nonexistent.db"], "no ledger at"),
        (["-m", "agent_client", "--name", "a", "--distribution", "x=1"], "--bid is required"),
        (["-m", "agent_client", "--name", "a", "--distribution", "x", "--bid", "1"], "token=probability"),
        (["-m", "agent_client", "--name", "a", "--agent", "nope.mod:X"], "cannot import"),
        (["-m", "agent_client", "--name", "a", "--agent", "examples.my_agent:Missing"], "has no"),
        (["-m", "agent_client", "--name", "a", "--market", "localhost:5555", "--bid", "1"], "not a ZeroMQ endpoint"),
        (["-m", "cli.swarm", "--count", "1", "--feed", "tcp://127.0.0.1:99999"], "no port from 1 to 65535"),
        (["-m", "auctioneer", "watch", "--feed", "nonsense"], "not a ZeroMQ endpoint"),
        (["-m", "auctioneer", "watch", "--feed", "ipc:///tmp/feed"], "pass the market endpoint with --market"),
        (["-m", "auctioneer", "dashboard", "--feed", "tcp://*:5556"], "no host to connect to"),
        (["-m", "auctioneer", "markets", "--exchange", "tcp://127.0.0.1"], "names no port"),
        (["-m", "auctioneer", "budget", "alice", "5", "--exchange", "udp://127.0.0.1:5555"], "not a ZeroMQ endpoint"),
        (["-m", "agent_client", "--name", "bad name!", "--distribution", "x=1", "--bid", "1"], "is not a name"),
        (["-m", "agent_client", "--name", "a", "--distribution", "x=1", "--bid", "nan"], "nan is not a finite number"),
        (["-m", "agent_client", "--name", "a", "--distribution", "x=0.5,y=0.2", "--bid", "1"], "sum to 0.7, not 1"),
        (["-m", "cli.swarm", "--count", "2", "--prefix", "a b"], "is not a name"),
        (["-m", "cli.swarm", "--count", "0"], "a count is at least 1, not 0"),
        (["-m", "auctioneer", "budget", "bad name!", "5"], "is not a name"),
        (["-m", "auctioneer", "budget", "alice", "-1"], "finite number >= 0 or 'unlimited', not -1"),
        (["-m", "auctioneer", "market", "close", "no such id!"], "is not a name"),
        (
            ["-m", "auctioneer", "market", "open", "--prompt", "x", "--agents", "a,b c"],
            "agents[1]: 'b c' is not a name",
        ),
    ],
)
def test_user_mistakes_get_one_actionable_line(argv: list[str], message: str) -> None:
    result = run_cli(*argv)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "endpoint", ["tcp://127.0.0.1:5555", "tcp://localhost:1", "tcp://[::1]:65535", "ipc:///tmp/feed", "inproc://x"]
)
def test_endpoints_clients_accept_are_ones_zeromq_connects_to(endpoint: str) -> None:
    assert endpoint_problem(endpoint) is None
    context = zmq.Context()
    try:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.IPV6, 1)
        sock.connect(endpoint)  # raises ZMQError on an endpoint it cannot use
        sock.close(linger=0)
    finally:
        context.term()


def test_a_config_file_asking_critical_bid_with_sample_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "market.toml"
    config.write_text('payment = "critical_bid"\nmode = "sample"\n')
    result = run_cli("-m", "auctioneer", "serve", "--config", str(config), "--db", str(tmp_path / "m.db"))
    assert result.returncode == 2 and "critical_bid needs mode greedy or stable, not sample" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "m.db").exists()


def test_a_market_in_the_config_that_cannot_run_is_refused_before_any_opens(tmp_path: Path) -> None:
    config = tmp_path / "exchange.toml"
    config.write_text('[[markets]]\nid = "fine"\nprompt = ""\n[[markets]]\nid = "broken"\nprompt = 5\n')
    result = run_cli("-m", "auctioneer", "serve", "--config", str(config), "--db", str(tmp_path / "x.db"))
    assert result.returncode == 2 and "setting markets[1].prompt: Input should be a valid string" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x.db").exists()  # "fine" was not opened either


@pytest.mark.parametrize(
    "argv,message",
    [
        (["-m", "auctioneer", "keygen", "alice", "--out", "{blocked}/keys"], "cannot write keys into"),
        (["-m", "auctioneer", "simulate", "{examples}/article.toml", "--out", "{blocked}/out"], "--out {blocked}/out"),
        (
            ["-m", "agent_client", "--name", "a", *static_agent("x=1", 1), "--resume-file", "{blocked}/r"],
            "--resume-file {blocked}/r: cannot create {blocked}",
        ),
        (["-m", "cli.swarm", "--count", "1", "--report-json", "{blocked}/r.json"], "--report-json {blocked}/r.json"),
    ],
)
def test_files_that_cannot_be_written_are_refused_up_front(tmp_path: Path, argv: list[str], message: str) -> None:
    blocked = tmp_path / "a-file"  # a regular file where a directory is needed
    blocked.write_text("")
    examples = Path(__file__).resolve().parents[1] / "examples"
    result = run_cli(*(arg.format(blocked=blocked, examples=examples) for arg in argv))
    assert result.returncode == 2, result.stderr
    assert message.format(blocked=blocked) in result.stderr and "Traceback" not in result.stderr


def test_restarting_with_different_mechanism_is_refused(market_run: MarketRun) -> None:
    market_run.serve("--min-agents", "1", "--max-tokens", "1")
    market_run.agent("a", *static_agent("x=1", 1))
    assert market_run.wait(60) == [0, 0]
    result = run_cli(
        "-m", "auctioneer", "serve", "--db", str(market_run.db), "--prompt", "", "--payment", "second_price"
    )
    assert result.returncode == 2 and "different payment" in result.stderr


def test_watch_follows_a_market_to_its_end(market_run: MarketRun) -> None:
    import subprocess
    import sys

    market_run.serve("--min-agents", "1", "--max-tokens", "4", "--prompt", "Watch:", "--round-pause", "0.2")
    spectator = subprocess.Popen(
        [sys.executable, "-m", "auctioneer", "watch", "--feed", market_run.feed, "--market", market_run.market],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    market_run.agent("a", *static_agent("w=1", 1))
    out, err = spectator.communicate(timeout=60)
    assert spectator.returncode == 0, err
    assert "market closed (max_tokens) after 4 rounds" in out
    assert "Watch:wwww" in out


def test_an_agent_gives_up_on_a_silent_auctioneer() -> None:
    from protocol.sockets import free_tcp_endpoint

    result = run_cli(
        "-m",
        "agent_client",
        "--name",
        "a",
        "--distribution",
        "x=1",
        "--bid",
        "1",
        "--market",
        free_tcp_endpoint(),
        "--feed",
        free_tcp_endpoint(),
        "--give-up-after",
        "1",
    )
    assert result.returncode == 2
    assert "gave up: no answer from the auctioneer" in result.stderr and "Traceback" not in result.stderr
