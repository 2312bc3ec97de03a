"""CurveZMQ key files, as both sides load them (SPEC.md section 1.2).

Keys are ZeroMQ certificate files as ``zmq.auth.create_certificates`` writes them: ``NAME.key``
holds a public key, ``NAME.key_secret`` the public and the secret key, both Z85-encoded.
"""

from __future__ import annotations

from pathlib import Path

import zmq.auth

from protocol.errors import UserError


class KeyFileError(UserError, ValueError):
    """A key file is missing, unreadable or of the wrong kind; the message names it."""


def load_public_key(path: Path | str) -> bytes:
    """The Z85-encoded public key in a ``.key`` (or ``.key_secret``) file."""
    try:
        public, _secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot load the CurveZMQ key {path}: {exc}") from None
    return bytes(public)


def load_keypair(path: Path | str) -> tuple[bytes, bytes]:
    """``(public, secret)``, Z85-encoded, from a ``.key_secret`` file."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot load the CurveZMQ key {path}: {exc}") from None
    if secret is None:
        raise KeyFileError(f"{path} holds no secret key (use the .key_secret file)")
    return bytes(public), bytes(secret)
