"""An agent process's settings, declared once as pydantic models (``agent-client``'s flags are
generated from them, as ``auctioneer serve``'s are from the auctioneer's settings).

- :class:`CurveClientSettings`: a client's CurveZMQ keys (agents and operators alike);
- :class:`AgentSettings`: where the exchange is, the agent's name, and how its runtime behaves;
- :class:`AgentChoice`: which agent to run: a static distribution, a phrase, your own class, or a
  scenario's agent, with their parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent_client.loading import parse_params
from agent_client.registration import GIVE_UP_AFTER
from agent_client.security import curve_client_setup
from protocol.client import SocketSetup
from protocol.fields import AgentName, NonNegativeFloat
from protocol.sockets import DEFAULT_FEED_ENDPOINT, DEFAULT_MARKET_ENDPOINT, endpoint_problem

SETTINGS_MODEL = ConfigDict(extra="forbid", frozen=True)


class CurveClientSettings(BaseModel):
    """A client's CurveZMQ keys: both, or neither (then CurveZMQ is off)."""

    model_config = SETTINGS_MODEL

    curve_secret: Path | None = Field(None, description="your CurveZMQ secret key file (NAME.key_secret)")
    server_key: Path | None = Field(None, description="the exchange's CurveZMQ public key file")

    @model_validator(mode="after")
    def _both_keys(self) -> CurveClientSettings:
        if (self.curve_secret is None) != (self.server_key is None):
            raise ValueError("CurveZMQ needs both curve_secret (--curve-secret) and server_key (--server-key)")
        return self

    def curve_setup(self) -> SocketSetup | None:
        """What makes a client socket authenticate with these keys (None without CurveZMQ)."""
        if self.curve_secret is None or self.server_key is None:
            return None
        return curve_client_setup(self.curve_secret, self.server_key)


class AgentSettings(CurveClientSettings):
    """Where the exchange is, who the agent is, and how its runtime behaves."""

    market: str = Field(DEFAULT_MARKET_ENDPOINT, description="the exchange's market endpoint")
    feed: str = Field(DEFAULT_FEED_ENDPOINT, description="the exchange's feed endpoint")
    name: AgentName = Field(description="the agent's name (letters, digits, _ . -)")
    give_up_after: float = Field(
        GIVE_UP_AFTER, gt=0, description="stop when the exchange has not answered for this many seconds"
    )
    stay: bool = Field(False, description="keep waiting for new markets once no market that invites it is open")
    resume_file: Path | None = Field(
        None, description="keep the name's resume secret in FILE, so a restarted agent returns under its name"
    )

    @field_validator("market", "feed")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        problem = endpoint_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


KINDS = ("distribution", "phrase", "agent", "scenario")


class AgentChoice(BaseModel):
    """Which agent runs: exactly one of ``distribution``, ``phrase``, ``agent`` or ``scenario``."""

    model_config = SETTINGS_MODEL

    distribution: str | None = Field(None, description='static agent: "Large=0.8,Generative=0.2" or JSON')
    phrase: str | None = Field(
        None, description="phrase agent: the text it wants written, e.g. ' Large Language Models.'"
    )
    agent: str | None = Field(None, description="your own agent: package.module:ClassName")
    scenario: Path | None = Field(
        None, description="the agent named --name in this scenario file (auctioneer simulate)"
    )
    bid: NonNegativeFloat | None = Field(None, description="bid per round (static and phrase agents)")
    confidence: float = Field(1.0, gt=0, le=1, description="phrase agent: mass on its next word")
    alternative: str | None = Field(None, description="phrase agent: the phrase that gets the remaining mass")
    param: list[str] = Field(
        default_factory=list,
        description="KEY=VALUE parameter for --agent (repeatable)",
        json_schema_extra={"repeat": True, "metavar": "KEY=VALUE"},
    )
    scenario_seed: int = Field(0, description="seed for a scenario agent's randomness")

    @model_validator(mode="after")
    def _one_kind(self) -> AgentChoice:
        given = [kind for kind in KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            flags = ", ".join(f"--{kind}" for kind in KINDS)
            raise ValueError(f"give exactly one of {flags}" + (f" (not {', '.join(given)})" if given else ""))
        if given[0] in ("distribution", "phrase") and self.bid is None:
            raise ValueError(f"--bid is required with --{given[0]}")
        return self

    def kind(self) -> str:
        return next(kind for kind in KINDS if getattr(self, kind) is not None)

    def parameters(self) -> dict[str, Any]:
        """The ``--param`` values as a mapping (see :func:`agent_client.loading.parse_params`)."""
        return parse_params(self.param)
