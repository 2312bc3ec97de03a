"""The dashboard and the metrics against real markets: ``/metrics`` scraped over HTTP and parsed
with prometheus_client's parser, and the page in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium) while a market runs, across an auctioneer restart."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from auctioneer.metrics import LatencyHistogram
from tests.helpers import (
    MarketRun,
    default_market_closed,
    free_http_address,
    read_ledger,
    scrape,
    static_agent,
    wait_until,
)

T = TypeVar("T")

AGENTS = {"alice": (" Hawaii=0.6, Maui=0.4", 2.0), "bob": (" Maui=0.5, Paris=0.5", 1.0)}
MECHANISM = ["--mode", "stable", "--payment", "critical_bid", "--min-agents", "2"]


def start_agents(run: MarketRun) -> None:
    for name, (distribution, amount) in AGENTS.items():
        run.agent(name, *static_agent(distribution, amount))


def test_metrics_of_serve_match_the_ledger(market_run: MarketRun) -> None:
    http = free_http_address()
    market_run.serve(*MECHANISM, "--max-tokens", "15", "--http", http, "--stay")
    start_agents(market_run)
    wait_until(lambda: default_market_closed(market_run.db), what="close")
    ledger = read_ledger(market_run.db)
    metrics = scrape(http)
    bids = sum(len(r["bids"]) for r in ledger["rounds"])
    revenue = sum(sum(r["payments"].values()) for r in ledger["rounds"])
    assert metrics["token_auction_rounds_committed_total"] == len(ledger["rounds"]) == 15
    assert metrics["token_auction_bids_total{outcome=accepted}"] == bids == 30
    assert metrics["token_auction_revenue_total"] == pytest.approx(revenue)
    assert metrics["token_auction_round_close_seconds_count"] == 15
    assert 1 <= metrics["token_auction_ledger_commit_seconds_count"] <= 16
    assert metrics["token_auction_open_markets"] == 0
    assert "token_auction_live_agents" in metrics and "token_auction_resyncs_served_total" in metrics
    assert metrics["token_auction_round_close_seconds_bucket{le=+Inf}"] == 15


def test_latency_buckets_hold_values_up_to_their_bound() -> None:
    histogram = LatencyHistogram()
    for seconds in (0.001, 0.0011, 0.0025, 100.0):
        histogram.observe(seconds)
    family = histogram.family("close_seconds", "test", created=1.0)
    values = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert values[("close_seconds_bucket", "0.001")] == 1
    assert values[("close_seconds_bucket", "0.0025")] == 3
    assert values[("close_seconds_bucket", "30.0")] == 3
    assert values[("close_seconds_bucket", "+Inf")] == values[("close_seconds_count", None)] == 4
    assert values[("close_seconds_sum", None)] == pytest.approx(100.0046)
    assert values[("close_seconds_created", None)] == 1.0


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser() -> Iterator[object]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_shows_the_market_live_and_recovers_after_a_restart(
    market_run: MarketRun, browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    serve = [*MECHANISM, "--prompt", "Vacations in", "--max-tokens", "70", "--round-pause", "0.1"]
    market_run.serve(*serve)
    start_agents(market_run)
    http = free_http_address()
    command = [sys.executable, "-m", "auctioneer", "dashboard", "--market", market_run.market]
    command += ["--feed", market_run.feed, "--http", http]
    with open(tmp_path / "dashboard.log", "wb") as log:
        dashboard = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    market_run.processes.append(dashboard)
    wait_until(lambda: _answers(http), what="the dashboard's HTTP server")

    def tokens() -> int:
        return len(browser.find_elements(By.CSS_SELECTOR, "#text .token"))

    def status() -> str:
        return str(settled(lambda: browser.find_element(By.ID, "status").get_attribute("data-state")))

    browser.get(f"http://{http}/")
    wait_until(lambda: tokens() >= 5, what="tokens on the page")
    first = tokens()
    wait_until(lambda: tokens() > first, what="the text growing")
    assert status() == "live"

    auctioneer = market_run.processes[0]
    auctioneer.send_signal(signal.SIGTERM)
    assert auctioneer.wait(20) == 0
    wait_until(lambda: status() == "unreachable", what="the page saying the auctioneer is unreachable")
    shown = tokens()
    market_run.serve(*serve)  # the same ledger: the market continues
    wait_until(lambda: status() == "live", timeout=60, what="the page recovering")
    wait_until(lambda: tokens() > shown, what="the text growing after the restart")

    wait_until(
        lambda: "closed" in settled(lambda: browser.find_element(By.ID, "market-state").text), timeout=60, what="close"
    )
    ledger = read_ledger(market_run.db)
    assert tokens() == sum(1 for r in ledger["rounds"] if r["token"] is not None)
    assert browser.find_element(By.ID, "text").text == ledger["text"]
    paid = settled(
        lambda: {
            row.get_attribute("data-agent"): float(row.find_element(By.CSS_SELECTOR, ".paid").text)
            for row in browser.find_elements(By.CSS_SELECTOR, "#agents tbody tr")
        }
    )
    assert paid == {agent: pytest.approx(ledger["balances"][agent], abs=1e-4) for agent in AGENTS}
    last = ledger["rounds"][-1]
    sponsor = max(last["sponsors"].items(), key=lambda kv: kv[1])[0]

    def last_token_sponsor_and_detail() -> tuple[str | None, str]:
        span = browser.find_elements(By.CSS_SELECTOR, "#text .token")[-1]
        shown_sponsor = span.get_attribute("data-sponsor")
        span.click()
        return shown_sponsor, browser.find_element(By.ID, "detail").text

    shown_sponsor, detail = settled(last_token_sponsor_and_detail)
    assert shown_sponsor == sponsor
    assert all(f"{last['payments'].get(agent, 0.0):.4f}" in detail for agent in AGENTS)
    browser.save_screenshot(str(tmp_path / "dashboard.png"))
    if os.environ.get("TOKEN_AUCTION_SCREENSHOT"):
        browser.save_screenshot(os.environ["TOKEN_AUCTION_SCREENSHOT"])


def settled(read: Callable[[], T]) -> T:
    """``read()`` of the live page, read again if the page re-rendered what it was reading (the page
    replaces rows and spans as updates arrive, which leaves selenium holding stale elements)."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(20):
        try:
            return read()
        except StaleElementReferenceException:
            time.sleep(0.1)
    return read()


def _answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/api/state", timeout=2):
            return True
    except OSError:
        return False
