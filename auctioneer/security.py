"""CurveZMQ for the auctioneer: key generation and the ZAP authenticator that names agents.

Keys use pyzmq's certificate format (``NAME.key`` public, ``NAME.key_secret`` secret). The
authorised-keys directory holds agents' public ``.key`` files; an agent's name is its file's stem,
and the ZAP handler reports that name as the connection's ``User-Id``, which the market checks
against ``hello``. Unknown keys fail the handshake and never reach the market.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.asyncio
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

from auctioneer.settings import MarketSettings
from protocol.cli import UsageError

log = logging.getLogger(__name__)

SERVER_KEY_NAME = "server"


def keygen(out_dir: Path, names: list[str]) -> list[Path]:
    """Write a keypair per name into ``out_dir``; return the public key files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        public, _secret = zmq.auth.create_certificates(out_dir, name)
        written.append(Path(public))
    return written


def authorized_names(directory: Path) -> dict[bytes, str]:
    """Public key -> agent name, from the ``*.key`` files in ``directory``."""
    names = {}
    for path in sorted(directory.glob("*.key")):
        public, _ = zmq.auth.load_certificate(path)
        names[public] = path.stem
    return names


class NamingAuthenticator(AsyncioAuthenticator):
    """ZAP handler whose ``User-Id`` is the agent name given to the client's public key."""

    def __init__(self, context: zmq.asyncio.Context, names: dict[bytes, str]) -> None:
        super().__init__(context)
        self.names = names

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.names.get(zmq.utils.z85.encode(client_public_key), "")


def load_server_keys(secret_file: Path) -> tuple[bytes, bytes]:
    try:
        public, secret = zmq.auth.load_certificate(secret_file)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the server key {secret_file}: {exc}") from None
    if secret is None:
        raise UsageError(f"{secret_file} holds no secret key (use the .key_secret file)")
    return public, secret


def curve_server_setup(settings: MarketSettings) -> Callable[[zmq.asyncio.Socket], None]:
    """A function that turns a server socket into an authenticated CurveZMQ server socket."""
    assert settings.curve_secret is not None and settings.authorized_keys is not None
    public, secret = load_server_keys(settings.curve_secret)
    if not settings.authorized_keys.is_dir():
        raise UsageError(f"--authorized-keys {settings.authorized_keys} is not a directory")
    names = authorized_names(settings.authorized_keys)
    authenticators: dict[int, NamingAuthenticator] = {}

    def setup(sock: zmq.asyncio.Socket) -> None:
        context = sock.context
        if id(context) not in authenticators:
            authenticator = NamingAuthenticator(context, names)  # type: ignore[arg-type]
            authenticator.start()
            authenticator.configure_curve(domain="*", location=str(settings.authorized_keys))
            authenticators[id(context)] = authenticator
            log.info("CurveZMQ on: %d authorised agent key(s)", len(names))
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True

    return setup
