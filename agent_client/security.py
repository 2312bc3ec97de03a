"""CurveZMQ for agents: load this agent's keypair and the auctioneer's public key."""

from __future__ import annotations

from collections.abc import Callable

import zmq
import zmq.asyncio
import zmq.auth

from protocol.cli import UsageError


def curve_client_setup(secret_file: str, server_key_file: str) -> Callable[[zmq.asyncio.Socket], None]:
    """A function that makes a client socket authenticate with these keys."""
    try:
        public, secret = zmq.auth.load_certificate(secret_file)
        server_public, _ = zmq.auth.load_certificate(server_key_file)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load CurveZMQ keys: {exc}") from None
    if secret is None:
        raise UsageError(f"{secret_file} holds no secret key (use the .key_secret file)")

    def setup(sock: zmq.asyncio.Socket) -> None:
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_serverkey = server_public

    return setup
