"""An agent's connections to the shards of its exchange: one :class:`ShardLink` per shard it trades
on, each with its own market socket, registration and feed.

An exchange of one process is one link. In an exchange of several shards, every shard's ``welcome``
and notices say where each market is (``market_info.market_endpoint`` and ``feed_endpoint``), and
the agent links to a shard only when one of its markets is there (it need not hold a connection to
every shard). Every link registers under the same name with the same resume secret (the exchange's
name bindings are shared), and the agent's budget is the exchange's, whichever shard it bids on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import zmq.asyncio

from agent_client.registration import Registration
from protocol.client import FeedFollower, MarketClient, SocketSetup
from protocol.messages import Welcome

Endpoints = tuple[str, str]  # a shard's market and feed endpoints


@dataclass
class ShardLink:
    """This agent at one shard: its request client, its registration there, and its feed."""

    endpoints: Endpoints
    client: MarketClient
    registration: Registration
    follower: FeedFollower | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    lost: bool = False  # the shard stopped answering for longer than the agent gives it

    async def open(self, context: zmq.asyncio.Context, setup: SocketSetup | None, timeout: float) -> Welcome:
        """Register at the shard and start following its feed (its notices from the welcome's seq)."""
        self.client.connect()
        welcome = await self.registration.register()
        self.follower = FeedFollower(context, self.endpoints[1], self.client, setup, timeout, welcome.exchange_seq)
        return welcome

    def close(self) -> None:
        if self.follower is not None:
            self.follower.close()
        self.client.close()


@dataclass
class ShardLinks:
    """Every link of one agent, the entry link (the endpoints it was given) first; the shards it
    knows of, and the markets to follow on links still opening."""

    context: zmq.asyncio.Context
    setup: SocketSetup | None
    name: str
    request_timeout: float
    give_up_after: float
    resume_file: Path | None
    entry: Endpoints
    links: dict[Endpoints, ShardLink] = field(default_factory=dict)
    known: set[Endpoints] = field(default_factory=set)  # every shard of the exchange, as welcomes told them
    waiting: dict[Endpoints, dict[str, int]] = field(default_factory=dict)  # market -> seq, until its link opens

    def link(self, endpoints: Endpoints) -> tuple[ShardLink, bool]:
        """The link to ``endpoints``, and whether it is new (then it must be opened)."""
        existing = self.links.get(endpoints)
        if existing is not None:
            return existing, False
        client = MarketClient(self.context, endpoints[0], self.setup)
        entry = self.links.get(self.entry)
        secret = entry.registration.secret if entry is not None else None
        resume_file = self.resume_file if endpoints == self.entry else None
        registration = Registration(client, self.name, self.request_timeout, self.give_up_after, resume_file, secret)
        created = self.links[endpoints] = ShardLink(endpoints, client, registration)
        return created, True

    def live(self) -> Iterator[ShardLink]:
        """The links open and answering, the entry link first."""
        ordered = sorted(self.links.values(), key=lambda link: link.endpoints != self.entry)
        return (link for link in ordered if link.follower is not None and not link.lost)

    @property
    def catching_up(self) -> bool:
        return any(link.follower is not None and link.follower.catching_up for link in self.links.values())

    def close(self) -> None:
        for link in self.links.values():
            link.close()
