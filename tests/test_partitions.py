"""Agents on separate hosts: network namespaces joined by veth pairs and a bridge, and a partition.

The auctioneer runs in one namespace and two agents in two others, each host linked by a veth
pair to a bridge in a fourth namespace (10.77.N.0/24 addresses exist only inside them). One agent's
link goes down for several rounds and comes back: it misses those rounds, recovers every missed
result, and bids again. Skips where namespaces cannot be created (not root, no iproute2).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import committed_rounds, read_ledger, wait_until

pytestmark = pytest.mark.netns


def ip(*args: str, namespace: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True, timeout=10)


class Hosts:
    """Three hosts (``auc``, ``ag1``, ``ag2``) on a bridge, all in namespaces made here."""

    def __init__(self, subnet: int) -> None:
        self.tag = f"ta{os.getpid() % 100000}"
        self.subnet = subnet
        self.bridge = f"{self.tag}br"
        self.names = {host: f"{self.tag}{host}" for host in ("auc", "ag1", "ag2")}
        self.address = {host: f"10.77.{subnet}.{i}" for i, host in enumerate(self.names, start=1)}

    def build(self) -> None:
        ip("netns", "add", self.bridge)
        ip("link", "add", "br0", "type", "bridge", namespace=self.bridge)
        ip("link", "set", "br0", "up", namespace=self.bridge)
        for host, namespace in self.names.items():
            ip("netns", "add", namespace)
            ip("link", "set", "lo", "up", namespace=namespace)
            ip(
                "link",
                "add",
                "eth0",
                "netns",
                namespace,
                "type",
                "veth",
                "peer",
                "name",
                f"p-{host}",
                "netns",
                self.bridge,
            )
            ip("link", "set", f"p-{host}", "master", "br0", namespace=self.bridge)
            ip("link", "set", f"p-{host}", "up", namespace=self.bridge)
            ip("addr", "add", f"{self.address[host]}/24", "dev", "eth0", namespace=namespace)
            ip("link", "set", "eth0", "up", namespace=namespace)

    def destroy(self) -> None:
        for namespace in [*self.names.values(), self.bridge]:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)

    def run(self, host: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        command = ["ip", "netns", "exec", self.names[host], sys.executable, *args]
        return subprocess.Popen(command, stdout=open(log, "wb"), stderr=subprocess.STDOUT)

    def link(self, host: str, state: str) -> None:
        ip("link", "set", "eth0", state, namespace=self.names[host])


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) is not installed")
    made = Hosts(subnet=os.getpid() % 200 + 1)
    try:
        made.build()
    except (subprocess.CalledProcessError, PermissionError) as exc:
        made.destroy()
        pytest.skip(f"cannot create network namespaces here: {exc}")
    try:
        yield made
    finally:
        made.destroy()


def test_partitioned_agent_misses_rounds_resyncs_and_bids_again(hosts: Hosts, tmp_path: Path) -> None:
    db = tmp_path / "market.db"
    market, feed = f"tcp://{hosts.address['auc']}:5555", f"tcp://{hosts.address['auc']}:5556"
    endpoints = ["--market", market, "--feed", feed]
    processes = [
        hosts.run(
            "auc",
            [
                "-m",
                "auctioneer",
                "serve",
                *endpoints,
                "--prompt",
                "",
                "--db",
                str(db),
                "--quiet",
                "--min-agents",
                "2",
                "--max-tokens",
                "60",
                "--round-timeout",
                "0.25",
                "--round-pause",
                "0.1",
                "--heartbeat",
                "0.2",
                "--insecure",  # the namespaces' addresses are not loopback; this test is about partitions
            ],
            tmp_path / "auctioneer.log",
        )
    ]
    for host, name, dist in (("ag1", "alice", "a=1"), ("ag2", "bob", "b=1")):
        processes.append(
            hosts.run(
                host,
                [
                    "-m",
                    "agent_client",
                    "-v",
                    *endpoints,
                    "--name",
                    name,
                    "--distribution",
                    dist,
                    "--bid",
                    "1",
                    "--report-json",
                    str(tmp_path / f"{name}.json"),
                ],
                tmp_path / f"{name}.log",
            )
        )
    try:
        wait_until(lambda: committed_rounds(db) >= 5, what="five rounds across hosts")
        hosts.link("ag2", "down")
        down_at = committed_rounds(db)
        time.sleep(2.0)
        hosts.link("ag2", "up")
        up_at = committed_rounds(db)
        codes = [p.wait(90) for p in processes]
    finally:
        for p in processes:
            p.kill()
    logs = "\n".join(f.read_text() for f in tmp_path.glob("*.log"))
    assert codes == [0, 0, 0], logs
    assert up_at - down_at >= 3, "the partition should span several rounds"
    ledger = read_ledger(db)
    rounds = ledger["rounds"]
    missed = [r["round"] for r in rounds if "bob" not in r["bids"]]
    assert missed and all(down_at < n <= up_at + 5 for n in missed)
    assert "bob" in rounds[-1]["bids"], "bob bids again after the partition"
    report = json.loads((tmp_path / "bob.json").read_text())
    (market,) = report["markets"]
    seen = {r["round"]: r["token"] for r in market["rounds"]}
    assert all(seen.get(r["round"]) == r["token"] for r in rounds), "bob recovered every result"
    assert market["text"] == ledger["text"] and report["resyncs"] >= 2
    assert report["verification_failures"] == 0
