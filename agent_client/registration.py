"""Registering an agent with the exchange and staying registered: ``hello`` with backoff, the resume
secret and its file, and the heartbeat's check-in.

Without CurveZMQ the exchange binds a name to a resume secret handed out in the first ``welcome``;
:class:`Registration` sends it with every later ``hello`` and keeps it in ``resume_file`` (if
given), so that a restarted agent process can return under its name. A check-in is a ``ping``: its
``pong`` carries the agent's spending and budget; ``NOT_REGISTERED`` (the exchange restarted and
forgot the connection) or silence for :data:`MISSED_PINGS` heartbeats means registering again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from protocol.client import MarketClient
from protocol.messages import Error, Hello, Ping, Pong, Welcome

log = logging.getLogger(__name__)

MISSED_PINGS = 3
GIVE_UP_AFTER = 60.0  # seconds without any answer from the auctioneer before the runtime stops


class AgentRejected(Exception):
    """The auctioneer refused this agent for good (for example an unauthorised name)."""


class AuctioneerLost(Exception):
    """No answer from the auctioneer for longer than the runtime's ``give_up_after``."""


class Registration:
    """One agent's registration under ``name`` over ``client``."""

    def __init__(
        self,
        client: MarketClient,
        name: str,
        request_timeout: float,
        give_up_after: float = GIVE_UP_AFTER,
        resume_file: Path | None = None,
        secret: str | None = None,
    ) -> None:
        """``secret``: the resume secret to return with (another shard's welcome gave it), else the
        one ``resume_file`` keeps."""
        self.client = client
        self.name = name
        self.request_timeout = request_timeout
        self.give_up_after = give_up_after
        self.resume_file = resume_file
        self._resume = secret or read_resume_secret(resume_file)
        self._last_contact = time.monotonic()

    async def register(self) -> Welcome:
        """``hello`` until welcomed (backing off while the auctioneer is silent); :class:`AgentRejected`
        if it refuses the name, :class:`AuctioneerLost` after ``give_up_after`` seconds of silence."""
        delay = 0.1
        while True:
            try:
                timeout = min(self.request_timeout, max(self.give_up_after, 0.1))
                hello = Hello(name=self.name, client="token-auction", resume=self._resume)
                reply = await self.client.request(hello, timeout)
            except (TimeoutError, ConnectionResetError):
                self._check_not_lost()
                log.info("auctioneer not answering hello; retrying in %.1fs", delay)
                self.client.connect()
            else:
                self._last_contact = time.monotonic()
                if isinstance(reply, Welcome):
                    self._keep_resume_secret(reply.resume)
                    return reply
                if isinstance(reply, Error):
                    hint = ""
                    if reply.code == "NAME_TAKEN" and self.resume_file is None:
                        hint = " (an agent process returns under its name with --resume-file)"
                    raise AgentRejected(f"{reply.code}: {reply.message}{hint}")
                log.info("unexpected reply to hello (%s); retrying in %.1fs", reply.type, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def check_in(self, heartbeat_interval: float, reconnected: Callable[[], None]) -> Welcome | Pong | None:
        """One heartbeat: the ``pong``, or a new ``welcome`` if the agent had to register again (after
        reconnecting, and calling ``reconnected``, if the auctioneer was silent); None for a reply
        that is neither."""
        try:
            reply = await self.client.request(Ping(), MISSED_PINGS * heartbeat_interval)
        except (TimeoutError, ConnectionResetError):
            log.warning("auctioneer silent for %d heartbeats; reconnecting", MISSED_PINGS)
            self.client.connect()
            reconnected()
            return await self.register()
        self._last_contact = time.monotonic()
        if isinstance(reply, Error) and reply.code == "NOT_REGISTERED":
            return await self.register()
        if isinstance(reply, Pong):
            return reply
        log.debug("unexpected reply to ping: %s", reply.type)
        return None

    @property
    def secret(self) -> str | None:
        """The resume secret in effect for the name."""
        return self._resume

    def _check_not_lost(self) -> None:
        silent = time.monotonic() - self._last_contact
        if silent > self.give_up_after:
            raise AuctioneerLost(f"no answer from the auctioneer for {silent:.0f}s")

    def _keep_resume_secret(self, secret: str | None) -> None:
        if secret is None or secret == self._resume:
            return
        self._resume = secret
        if self.resume_file is not None:
            write_resume_secret(self.resume_file, secret)


def read_resume_secret(path: Path | None) -> str | None:
    """The resume secret kept in ``path`` (None without a file, or before the first welcome wrote it)."""
    if path is None or not path.exists():
        return None
    return path.read_text(encoding="ascii").strip() or None


def write_resume_secret(path: Path, secret: str) -> None:
    """Keep the secret readable by this user only, replacing the file whole (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(secret + "\n")
    os.replace(partial, path)
