"""CurveZMQ for agents: authenticate this agent's sockets with its keypair and the auctioneer's key."""

from __future__ import annotations

from pathlib import Path

import zmq.asyncio

from protocol.client import SocketSetup
from protocol.curve import load_keypair, load_public_key


def curve_client_setup(secret_file: Path | str, server_key_file: Path | str) -> SocketSetup:
    """A function that makes a client socket authenticate with these keys (:class:`KeyFileError` if unusable)."""
    public, secret = load_keypair(secret_file)
    server_public = load_public_key(server_key_file)

    def setup(sock: zmq.asyncio.Socket) -> None:
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_serverkey = server_public

    return setup
