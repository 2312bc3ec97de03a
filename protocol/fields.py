"""Field types shared by every model of the project: wire messages, settings, scenarios, evaluate input.

Each pattern or bound is written here once; models annotate their fields with these types.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

AGENT_NAME_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
NAME_RULE = "1 to 64 letters, digits, '_', '.' or '-'"

AgentName = Annotated[str, Field(pattern=AGENT_NAME_PATTERN)]
"""An agent's name: 1 to 64 letters, digits, ``_``, ``.`` or ``-``."""

MarketId = Annotated[str, Field(pattern=AGENT_NAME_PATTERN)]
"""A market's id in an exchange: chosen by the operator who opens it, or 12 hex digits generated."""

SeedHex = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]
"""32 bytes as 64 hex characters (either case): a market's or a round's seed, as a user types it."""

HexDigest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
"""A SHA-256 digest, or a revealed seed, as 64 lowercase hex characters (on the wire)."""

RequestId = Annotated[int, Field(ge=0, lt=2**63)]
RoundNumber = Annotated[int, Field(ge=1, lt=2**63)]
Seq = Annotated[int, Field(ge=0, lt=2**63)]
Count = Annotated[int, Field(ge=0, lt=2**63)]

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
UnitInterval = Annotated[float, Field(gt=0, lt=1)]
