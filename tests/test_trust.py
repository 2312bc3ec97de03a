"""Identity (CurveZMQ), budgets, verifiable rounds and the audit, with real processes."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from agent_client.verify import result_problems
from protocol import decode, encode
from protocol.market_rules import MechanismSettings
from protocol.messages import BidAccepted, Error, Hello, RoundResult, SealedBid, Welcome
from tests.helpers import BID, MarketRun, RawPeer, open_round, read_ledger, run_cli, static_agent

LINEAR_SAMPLE = MechanismSettings(aggregation="linear", payment="first_price", mode="sample", temperature=1.0)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    out = tmp_path / "keys"
    assert run_cli("-m", "auctioneer", "keygen", "--out", str(out), "server", "alice", "mallory").returncode == 0
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    (authorized / "alice.key").write_bytes((out / "alice.key").read_bytes())
    return out


def curve_flags(keys: Path, name: str) -> list[str]:
    return ["--curve-secret", str(keys / f"{name}.key_secret"), "--server-key", str(keys / "server.key")]


def test_curve_binds_names_to_keys(market_run: MarketRun, keys: Path) -> None:
    market_run.serve(
        "--min-agents",
        "1",
        "--max-tokens",
        "3",
        "--curve-secret",
        str(keys / "server.key_secret"),
        "--authorized-keys",
        str(keys.parent / "authorized"),
    )
    impostor = run_cli(
        "-m",
        "agent_client",
        "--market",
        market_run.market,
        "--feed",
        market_run.feed,
        "--name",
        "bob",
        "--distribution",
        "x=1",
        "--bid",
        "1",
        *curve_flags(keys, "alice"),
    )
    assert impostor.returncode == 2 and "UNAUTHORIZED" in impostor.stderr
    market_run.agent("alice", *static_agent("x=1", 1), *curve_flags(keys, "alice"))
    assert [p.wait(60) for p in market_run.processes] == [0, 0], market_run.logs()
    assert read_ledger(market_run.db)["text"] == "xxx"


def test_unknown_keys_and_plain_peers_get_nothing(market_run: MarketRun, keys: Path) -> None:
    market_run.serve(
        "--min-agents",
        "5",
        "--heartbeat",
        "0.1",
        "--curve-secret",
        str(keys / "server.key_secret"),
        "--authorized-keys",
        str(keys.parent / "authorized"),
    )
    context = zmq.Context()
    server_key = zmq.auth.load_certificate(keys / "server.key")[0]

    def curve_socket(kind: int, name: str | None) -> zmq.Socket[bytes]:
        sock = context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if name is not None:
            public, secret = zmq.auth.load_certificate(keys / f"{name}.key_secret")
            sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server_key
        if kind == zmq.SUB:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        return sock

    try:
        unknown, plain, alice = (curve_socket(zmq.DEALER, name) for name in ("mallory", None, "alice"))
        unknown_feed, alice_feed = (curve_socket(zmq.SUB, name) for name in ("mallory", "alice"))
        for sock in (unknown, plain, alice):
            sock.connect(market_run.market)
        for sock in (unknown_feed, alice_feed):
            sock.connect(market_run.feed)
        time.sleep(0.3)
        for sock in (unknown, plain, alice):
            sock.send(encode(Hello(name="alice")), zmq.NOBLOCK)
        # Positive control in the same run: the authorised key is welcomed and hears the heartbeats.
        assert alice.poll(10_000) and isinstance(decode(alice.recv()), Welcome)
        assert alice_feed.poll(5_000), "the authorised subscriber heard nothing"
        assert not unknown.poll(1500) and not plain.poll(100)
        assert not unknown_feed.poll(1000), "an unauthorised subscriber received the feed (heartbeats every 0.1 s)"
    finally:
        context.destroy(linger=0)


def test_budgets_refuse_overspending(market_run: MarketRun, tmp_path: Path) -> None:
    config = tmp_path / "budgets.toml"
    config.write_text('prompt = ""\nbudget = 2.5\n[budgets]\nrich = 100.0\n')
    market_run.serve("--config", str(config), "--min-agents", "2", "--max-tokens", "6")
    market_run.agent("poor", *static_agent("p=1", 1))
    market_run.agent("rich", *static_agent("r=1", 4))
    assert market_run.wait(60) == [0, 0, 0], market_run.logs()
    ledger = read_ledger(market_run.db)
    assert ledger["balances"] == {"poor": 2.0, "rich": 24.0}
    assert sum("poor" in r["bids"] for r in ledger["rounds"]) == 2
    assert "BUDGET_EXCEEDED" in (market_run.directory / "poor.log").read_text()


def test_budget_exceeded_is_a_typed_error(market_run: MarketRun) -> None:
    market_run.serve("--min-agents", "1", "--budget", "1", "--round-timeout", "5")
    peer = RawPeer(market_run.market)
    try:
        welcome = peer.request(Hello(name="spender"))
        assert isinstance(welcome, Welcome) and welcome.budget == 1.0
        number = open_round(peer).round
        over = peer.request(SealedBid(round=number, distribution=BID, bid=1.5))
        assert isinstance(over, Error) and over.code == "BUDGET_EXCEEDED"
        assert isinstance(peer.request(SealedBid(round=number, distribution=BID, bid=1.0)), BidAccepted)
    finally:
        peer.close()


def test_audit_passes_then_catches_a_tampered_payment(market_run: MarketRun) -> None:
    market_run.serve("--min-agents", "2", "--max-tokens", "5", "--payment", "second_price")
    market_run.agent("a", *static_agent("x=0.7,y=0.3", 1))
    market_run.agent("b", *static_agent("y=1", 2))
    assert market_run.wait(60) == [0, 0, 0]
    clean = run_cli("-m", "auctioneer", "audit", "--db", str(market_run.db))
    assert clean.returncode == 0 and "audit passed: 5 rounds verified" in clean.stdout
    with sqlite3.connect(market_run.db) as db:
        overcharge = (
            "UPDATE payments SET amount = amount + 0.5 WHERE agent = 'b'"
            " AND round_id = (SELECT id FROM rounds WHERE round = 3)"
        )
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute(overcharge)
        db.execute("DROP TRIGGER payments_append_only")
        db.execute(overcharge)
    tampered = run_cli("-m", "auctioneer", "audit", "--db", str(market_run.db))
    assert tampered.returncode == 1
    assert "first mismatch in round 3" in tampered.stdout
    assert "round 2: ok" in tampered.stdout and "round 3: MISMATCH" in tampered.stdout
    quiet = run_cli("-m", "auctioneer", "audit", "--db", str(market_run.db), "--quiet")
    assert quiet.returncode == 1 and "round 3: MISMATCH b was charged" in quiet.stdout
    assert ": ok" not in quiet.stdout and "first mismatch in round 3 (3 of 5 rounds)" in quiet.stdout


def test_audit_catches_misattributed_sponsors(market_run: MarketRun) -> None:
    market_run.serve("--min-agents", "2", "--max-tokens", "3", "--payment", "critical_bid", "--mode", "stable")
    market_run.agent("a", *static_agent("x=0.7,y=0.3", 1))
    market_run.agent("b", *static_agent("y=0.6,x=0.4", 2))
    assert market_run.wait(60) == [0, 0, 0], market_run.logs()
    with sqlite3.connect(market_run.db) as db:
        db.execute("DROP TRIGGER sponsors_append_only")
        db.execute("UPDATE sponsors SET share = share / 2 WHERE round_id = (SELECT id FROM rounds WHERE round = 2)")
    audit = run_cli("-m", "auctioneer", "audit", "--db", str(market_run.db))
    assert audit.returncode == 1
    assert "round 1: ok" in audit.stdout and "round 2: MISMATCH sponsors" in audit.stdout
    assert "round 3: ok" in audit.stdout


def test_agents_verify_results_and_flag_forgeries(market_run: MarketRun) -> None:
    market_run.serve("--min-agents", "1", "--max-tokens", "2")
    market_run.agent("a", *static_agent("x=0.5,y=0.5", 1))
    assert market_run.wait(60) == [0, 0]
    with sqlite3.connect(market_run.db) as db:
        result = decode(db.execute("SELECT result FROM rounds WHERE round = 1").fetchone()[0])
    assert isinstance(result, RoundResult)
    assert result_problems(result, result.seed_commitment, LINEAR_SAMPLE) == []
    other = "y" if result.token == "x" else "x"
    forged_token = result.model_copy(update={"token": other})
    assert any("not the draw" in p for p in result_problems(forged_token, result.seed_commitment, LINEAR_SAMPLE))
    forged_seed = result.model_copy(update={"seed": "00" * 32})
    assert any("sha256(seed)" in p for p in result_problems(forged_seed, result.seed_commitment, LINEAR_SAMPLE))
    assert any("announced" in p for p in result_problems(result, "ff" * 32, LINEAR_SAMPLE))
