"""CurveZMQ for the auctioneer: key generation and the ZAP authenticator that names agents.

Keys use pyzmq's certificate format (``NAME.key`` public, ``NAME.key_secret`` secret). The
authorised-keys directory holds agents' public ``.key`` files; an agent's name is its file's stem,
and the ZAP handler reports that name as the connection's ``User-Id``, which the market checks
against ``hello``. Unknown keys fail the handshake and never reach the market.
"""

from __future__ import annotations

import logging
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


class CurveServer:
    """CurveZMQ for the auctioneer's sockets: ``apply`` before binding, ``stop`` before the context ends."""

    def __init__(self, settings: MarketSettings) -> None:
        assert settings.curve_secret is not None and settings.authorized_keys is not None
        self.public, self.secret = load_server_keys(settings.curve_secret)
        if not settings.authorized_keys.is_dir():
            raise UsageError(f"--authorized-keys {settings.authorized_keys} is not a directory")
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
