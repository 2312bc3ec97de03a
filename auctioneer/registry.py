"""Who is registered with an exchange: agents' names and the connections that hold them, resume
secrets, liveness, and forgetting the silent.

An agent registers once (``hello``) for the whole exchange. Names: with CurveZMQ a name is the
key's. Without, a name belongs to its first registrant: the ``welcome`` hands out a resume secret,
and any later ``hello`` under that name must carry it (``NAME_TAKEN`` otherwise, whether or not the
holder is connected). The binding is made durable with the agent's first committed bid (the group
commit writes :meth:`AgentRegistry.unbound`). A connection holds one name; an address holds at most
``max_agents_per_address``.

Liveness: an agent is live while it sent anything within :data:`LIVENESS_HEARTBEATS` heartbeats.
The live set is recomputed at most every half heartbeat, and ``live_version`` changes whenever it
does, so markets can cache who they wait for. Agents silent for :data:`FORGET_AFTER_HEARTBEATS`
heartbeats with no open bid are forgotten (what they paid stays in the ledger).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass

from auctioneer.settings import ExchangeSettings
from protocol import ErrorCode, ProtocolError
from protocol.messages import Hello

log = logging.getLogger(__name__)

LIVENESS_HEARTBEATS = 3
FORGET_AFTER_HEARTBEATS = 30
SILENT_NAMES_SHOWN = 5  # agents named when many go silent at once


@dataclass
class AgentRecord:
    name: str
    peer: bytes
    identity: str | None
    last_seen: float
    address: str | None = None
    secret_hash: str | None = None  # without CurveZMQ: the hash of the name's resume secret
    bound: bool = False  # the binding is in the ledger


def secret_hash(secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(secret)).hexdigest()


class AgentRegistry:
    """The registered agents, by name and by connection (routing id)."""

    def __init__(self, settings: ExchangeSettings, binding: Callable[[str], str | None], now: float) -> None:
        """``binding``: the ledger's secret hash for a name, if it was ever bound."""
        self.settings = settings
        self._binding = binding
        self.agents: dict[str, AgentRecord] = {}
        self._peers: dict[bytes, str] = {}
        self._per_address: Counter[str] = Counter()
        self._swept = now
        self.live: set[str] = set()
        self.live_version = 0
        self._live_checked = float("-inf")

    def heard_from(self, peer: bytes, now: float) -> str | None:
        """The name ``peer`` is registered under (None if it is not), noting that it spoke now."""
        name = self._peers.get(peer)
        if name is not None:
            self.agents[name].last_seen = now
        return name

    def name_of(self, peer: bytes) -> str | None:
        return self._peers.get(peer)

    # --- registration ---------------------------------------------------------------------

    def register(
        self, peer: bytes, hello: Hello, identity: str | None, address: str | None, now: float
    ) -> tuple[AgentRecord, str | None]:
        """Register ``hello.name`` for ``peer`` (``identity``: its CurveZMQ key name; ``address``: its
        network address), or refuse it: its record, and the resume secret to hand out (None with
        CurveZMQ)."""
        if identity is not None and hello.name != identity:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"your key is authorised as {identity!r}, not {hello.name!r}")
        holder = self._peers.get(peer)
        if holder is not None and holder != hello.name:
            raise ProtocolError(
                ErrorCode.LIMIT_REACHED, f"this connection is registered as {holder!r}: one name per connection"
            )
        existing = self.agents.get(hello.name)
        secret, bound = (None, False) if identity is not None else self._resume_secret(hello, existing)
        held = self._per_address[address] if address is not None else 0
        if existing is None and held >= self.settings.max_agents_per_address:
            raise ProtocolError(
                ErrorCode.LIMIT_REACHED, f"{address} already has {held} registered agents (the exchange's maximum)"
            )
        if existing is not None:
            self._unregister(existing)
            if existing.peer != peer:
                log.debug("agent %s re-registered from a new connection", hello.name)
        else:
            log.debug("agent %s registered", hello.name)
        record = AgentRecord(hello.name, peer, identity, now, address, secret and secret_hash(secret), bound)
        self.agents[hello.name] = record
        self._peers[peer] = hello.name
        if address is not None:
            self._per_address[address] += 1
        if hello.name not in self.live:  # live from now on, without recomputing everyone's liveness
            self.live.add(hello.name)
            self.live_version += 1
        return record, secret

    def _resume_secret(self, hello: Hello, existing: AgentRecord | None) -> tuple[str, bool]:
        """The secret in effect for the name (a new one for a new name, or the one a returning agent
        proposes for a name the exchange does not know), and whether its binding is already in the
        ledger."""
        if existing is not None:
            bound, durable = existing.secret_hash, existing.bound
        else:
            bound = self._binding(hello.name)
            durable = bound is not None
        if bound is None:
            return hello.resume or secrets.token_hex(32), False
        if hello.resume is None or not hmac.compare_digest(secret_hash(hello.resume), bound):
            raise ProtocolError(
                ErrorCode.NAME_TAKEN,
                f"the name {hello.name!r} belongs to another agent: to return under it, send the resume "
                "secret its first welcome gave; otherwise choose another name",
                "resume",
            )
        return hello.resume, durable

    def _unregister(self, agent: AgentRecord) -> None:
        if self._peers.get(agent.peer) == agent.name:
            del self._peers[agent.peer]
        if agent.address is not None:
            self._per_address[agent.address] -= 1
            if not self._per_address[agent.address]:
                del self._per_address[agent.address]

    def unbound(self, names: Collection[str]) -> list[AgentRecord]:
        """The agents among ``names`` whose name binding is not yet in the ledger."""
        return [self.agents[name] for name in names if name in self.agents and not self.agents[name].bound]

    # --- liveness -------------------------------------------------------------------------

    def is_live(self, agent: AgentRecord, now: float) -> bool:
        return now - agent.last_seen <= LIVENESS_HEARTBEATS * self.settings.heartbeat_interval

    def live_agents(self, now: float) -> list[str]:
        return [name for name, agent in self.agents.items() if self.is_live(agent, now)]

    def refresh_liveness(self, now: float) -> None:
        """Recompute who is live, at most every half heartbeat."""
        if now - self._live_checked <= self.settings.heartbeat_interval / 2:
            return
        self._live_checked = now
        live = {name for name, agent in self.agents.items() if self.is_live(agent, now)}
        if live != self.live:
            self._report_silent(sorted(self.live - live))
            self.live = live
            self.live_version += 1

    def _report_silent(self, names: list[str]) -> None:
        """Tell the operator who stopped counting as live (one line, however many went at once)."""
        if not names:
            return
        limit = LIVENESS_HEARTBEATS * self.settings.heartbeat_interval
        shown = ", ".join(names[:SILENT_NAMES_SHOWN]) + (", ..." if len(names) > SILENT_NAMES_SHOWN else "")
        who = f"agent {shown}" if len(names) == 1 else f"{len(names)} agents ({shown})"
        log.info("%s silent for over %.1f s: rounds no longer wait for them", who, limit)

    def heard_since(self, since: float, invited: Callable[[str], bool]) -> bool:
        """Whether an agent ``invited`` accepts was heard from at or after ``since``."""
        return any(agent.last_seen >= since for agent in self.agents.values() if invited(agent.name))

    def forget_silent(self, now: float, may_forget: Callable[[str], bool]) -> None:
        """Forget agents silent for long that ``may_forget`` lets go (no open bid), at most once a heartbeat."""
        if now - self._swept < self.settings.heartbeat_interval:
            return
        self._swept = now
        horizon = FORGET_AFTER_HEARTBEATS * self.settings.heartbeat_interval
        silent = [agent for agent in self.agents.values() if now - agent.last_seen > horizon]
        for agent in silent:
            if may_forget(agent.name):
                self._unregister(agent)
                del self.agents[agent.name]
        if silent:
            log.debug("forgot %d silent agents", len(silent))
