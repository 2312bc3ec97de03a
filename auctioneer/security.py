"""CurveZMQ for the auctioneer: key generation and the ZAP authenticator that names agents.

Keys use pyzmq's certificate format (``NAME.key`` public, ``NAME.key_secret`` secret). The
authorised-keys directory holds agents' public ``.key`` files; an agent's name is its file's stem,
and the ZAP handler reports that name as the connection's ``User-Id``, which the market checks
against ``hello``. Unknown keys fail the handshake and never reach the market.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import zmq
import zmq.asyncio
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

from auctioneer.settings import ServeSettings
from protocol.curve import KeyFileError, load_keypair, load_public_key
from protocol.fields import AGENT_NAME_PATTERN

log = logging.getLogger(__name__)


def keygen(out_dir: Path, names: list[str]) -> list[Path]:
    """Write a keypair per name into ``out_dir``; return the public key files.

    Names are ``server`` and agent names (an agent's name is its key file's stem).
    """
    bad = [name for name in names if not re.fullmatch(AGENT_NAME_PATTERN, name)]
    if bad:
        raise KeyFileError(f"invalid key name {bad[0]!r}: use 1 to 64 letters, digits, _ . - (agent names)")
    written = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            public, _secret = zmq.auth.create_certificates(out_dir, name)
            written.append(Path(public))
    except OSError as exc:
        raise KeyFileError(f"cannot write keys into {out_dir}: {exc.strerror}") from None
    return written


def authorized_names(directory: Path) -> dict[bytes, str]:
    """Z85 public key -> agent name, from the ``*.key`` files in ``directory``."""
    names = {}
    for path in sorted(directory.glob("*.key")):
        names[load_public_key(path)] = path.stem
    return names


class NamingAuthenticator(AsyncioAuthenticator):
    """ZAP handler whose ``User-Id`` is the agent name given to the client's public key."""

    def __init__(self, context: zmq.asyncio.Context, names: dict[bytes, str]) -> None:
        super().__init__(context)
        self.names = names

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.names.get(zmq.utils.z85.encode(client_public_key), "")


class CurveServer:
    """CurveZMQ for the auctioneer's sockets: ``apply`` before binding, ``stop`` before the context ends."""

    def __init__(self, settings: ServeSettings) -> None:
        assert settings.curve_secret is not None and settings.authorized_keys is not None
        self.public, self.secret = load_keypair(settings.curve_secret)
        if not settings.authorized_keys.is_dir():
            raise KeyFileError(f"authorized_keys {settings.authorized_keys} is not a directory")
        self.directory = settings.authorized_keys
        self.names = authorized_names(self.directory)
        self.authenticator: NamingAuthenticator | None = None

    def apply(self, sock: zmq.asyncio.Socket) -> None:
        if self.authenticator is None:
            self.authenticator = NamingAuthenticator(sock.context, self.names)  # type: ignore[arg-type]
            self.authenticator.start()
            self.authenticator.configure_curve(domain="*", location=str(self.directory))
            log.info("CurveZMQ on: %d authorised agent key(s)", len(self.names))
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def stop(self) -> None:
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None
