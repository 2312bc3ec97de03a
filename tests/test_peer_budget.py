"""Request budgets per connection and per address, and throttled warnings, on a clock the test moves."""

from __future__ import annotations

import logging

import pytest

from auctioneer.peer_budget import KIB, REQUEST_BURST_SECONDS, PeerBudgets, ThrottledWarnings


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def never_looked_up() -> str | None:
    raise AssertionError("the address of a connection over its budget was looked up")


def test_a_connection_over_its_budget_is_refused_before_its_address_is_looked_up() -> None:
    clock = FakeClock()
    budgets = PeerBudgets(request_rate=10, address_rate=1000, clock=clock)
    burst = int(10 * REQUEST_BURST_SECONDS)
    admitted = [budgets.admit_request(b"peer", 0, lambda: "10.0.0.1").admitted for _ in range(burst)]
    assert admitted == [True] * burst
    assert budgets.admit_request(b"peer", 0, never_looked_up) == (False, None)
    clock.now += 0.15  # a unit and a half back at 10 a second
    assert budgets.admit_request(b"peer", 0, lambda: "10.0.0.1") == (True, "10.0.0.1")


def test_connections_from_one_address_share_its_budget() -> None:
    clock = FakeClock()
    budgets = PeerBudgets(request_rate=1000, address_rate=5, clock=clock)
    burst = int(5 * REQUEST_BURST_SECONDS)
    answers = [budgets.admit_request(f"peer-{k}".encode(), 0, lambda: "10.0.0.2").admitted for k in range(burst + 3)]
    assert answers == [True] * burst + [False] * 3
    # Another address is not affected; a connection without a TCP address only has its own budget.
    assert budgets.admit_request(b"peer-x", 0, lambda: "10.0.0.3").admitted
    assert budgets.admit_request(b"peer-y", 0, lambda: None) == (True, None)


@pytest.mark.parametrize("size, cost", [(0, 1.0), (KIB, 2.0), (10 * KIB, 11.0)])
def test_a_request_costs_a_unit_plus_one_per_kib(size: int, cost: float) -> None:
    budgets = PeerBudgets(request_rate=100, address_rate=100, clock=FakeClock())
    assert budgets.admit_request(b"peer", size, lambda: "10.0.0.4").admitted
    left = 100 * REQUEST_BURST_SECONDS - cost
    assert budgets.requests.refilled(b"peer", 100.0)[0] == pytest.approx(left)
    assert budgets.addresses.refilled(b"10.0.0.4", 100.0)[0] == pytest.approx(left)


def test_a_request_refused_by_its_address_charges_nothing() -> None:
    clock = FakeClock()
    budgets = PeerBudgets(request_rate=100, address_rate=0.5, clock=clock)
    assert budgets.admit_request(b"first", 0, lambda: "10.0.0.5").admitted  # the address's one unit
    assert budgets.admit_request(b"second", 0, lambda: "10.0.0.5") == (False, "10.0.0.5")
    assert budgets.requests.refilled(b"second", clock.now)[0] == 100 * REQUEST_BURST_SECONDS


def test_warnings_count_what_failed_and_log_it_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    warnings = ThrottledWarnings(logging.getLogger("budget-test"), interval=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="budget-test"):
        warnings.note("requests dropped", 256)  # the first is logged at once
        warnings.note("requests dropped", 100)
        warnings.note("replies dropped")
        clock.now += 5.0
        warnings.note("requests dropped", 44)
        assert [r.getMessage() for r in caplog.records] == ["requests dropped: 256 in the last 10 s"]
        clock.now += 5.0
        warnings.note("replies dropped")
    assert [r.getMessage() for r in caplog.records[1:]] == [
        "requests dropped: 144 in the last 10 s",
        "replies dropped: 2 in the last 10 s",
    ]


def test_new_connections_bring_no_fresh_sync_allowance_to_their_address() -> None:
    clock = FakeClock()
    budgets = PeerBudgets(request_rate=1000, address_rate=1000, clock=clock)
    mib = 1024 * KIB
    answered = 0
    for k in range(10):  # each connection syncs 16 MiB, its own whole allowance
        peer = f"peer-{k}".encode()
        if budgets.admit_sync(peer, "10.0.0.3"):
            budgets.sync_sent(peer, "10.0.0.3", 16 * mib)
            answered += 1
    assert answered == 2  # the address's allowance is two connections' worth, however many it opens
    assert budgets.admit_sync(b"elsewhere", "10.0.0.4")  # another host is not affected
    clock.now += 4.0  # 8 MiB a second for the address: 32 MiB back
    assert budgets.admit_sync(b"peer-9", "10.0.0.3")
