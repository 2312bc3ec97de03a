"""The auctioneer's settings, derived from the protocol's one declaration of a market (``MarketRules``).

- :class:`CheckedMechanism`: the mechanism settings, with every rule name checked against the
  mechanism's registries;
- :class:`MarketSettings`: a market's public rules plus its private ``seed``;
- :class:`ExchangeSettings`: what one ``auctioneer serve`` process needs whatever its markets:
  endpoints, ledger, liveness, request limits and per-peer budgets, budgets, CurveZMQ, operators;
- :class:`ServeSettings`: both, flat: the market fields are the exchange's defaults for every market
  it opens, and given a ``prompt`` they also describe the market opened at start (its default
  market). A config file may list more markets to open at start (``[[markets]]``, :class:`MarketSpec`).

Keys are the field names everywhere (TOML config, scenario ``[market]``, ``evaluate`` input,
``open_market`` requests); the command-line flags are generated from the fields. The part that
defines a market (:meth:`MarketSettings.definition`) is stored with it and may not change on restart.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from auctioneer.mechanism import MechanismConfigError, Reference, SparseDistribution, check_mechanism
from protocol.codec import LIMITS
from protocol.errors import UserError, describe_validation_error
from protocol.fields import AgentName, MarketId, NonNegativeFloat, PositiveFloat, SeedHex
from protocol.market_rules import MarketRules, MechanismSettings
from protocol.sockets import DEFAULT_FEED_ENDPOINT, DEFAULT_MARKET_ENDPOINT

SETTINGS_MODEL = ConfigDict(extra="forbid", strict=False, frozen=True)
DEFAULT_DB = "market.db"
LedgerAddress = Annotated[str, BeforeValidator(str)]  # an SQLite file's path, or a postgresql:// URL


class SettingsError(UserError, ValueError):
    """Settings that cannot run; the message names the setting and says what is wrong."""


class CheckedMechanism(MechanismSettings):
    """Mechanism settings whose rules exist in this auctioneer's registries."""

    model_config = SETTINGS_MODEL

    @model_validator(mode="after")
    def _registered_rules(self) -> CheckedMechanism:
        try:
            check_mechanism(self)
        except MechanismConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def mechanism(self) -> MechanismSettings:
        """Just the mechanism settings, as the protocol states them to agents."""
        return MechanismSettings.model_validate(self.model_dump(include=set(MechanismSettings.model_fields)))


class MarketSettings(MarketRules, CheckedMechanism):
    """One market: its public rules and its private seed."""

    model_config = SETTINGS_MODEL

    seed: SeedHex | None = Field(None, description="64 hex chars; derives every round's seed (reproducible markets)")

    def reference_distribution(self) -> Reference | None:
        if self.reference is None:
            return None
        return Reference(SparseDistribution.from_mapping(self.reference), self.reference_weight)

    def definition(self) -> dict[str, Any]:
        """The settings that define the market itself: fixed once the ledger holds the market."""
        defining = {*MechanismSettings.model_fields, "prompt", "reference", "reference_weight", "seed"}
        return self.model_dump(mode="json", include=defining)


class MarketSpec(BaseModel):
    """A market to open: its settings over the exchange's defaults, and who takes part."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    settings: dict[str, Any] = Field(default_factory=dict)
    id: MarketId | None = None
    agents: list[AgentName] | None = None
    reference_agent: AgentName | None = None
    shard: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data: Any) -> Any:
        """A config file's ``[[markets]]`` table is flat: settings beside ``id``, ``agents``, ``reference_agent``."""
        if isinstance(data, dict) and "settings" not in data:
            own = {key: data[key] for key in ("id", "agents", "reference_agent", "shard") if key in data}
            return {**own, "settings": {k: v for k, v in data.items() if k not in own}}
        return data


class ExchangeSettings(BaseModel):
    """The auctioneer process, whatever markets it hosts."""

    model_config = SETTINGS_MODEL

    market: str = Field(DEFAULT_MARKET_ENDPOINT, description="ROUTER endpoint to bind (requests)")
    feed: str = Field(DEFAULT_FEED_ENDPOINT, description="PUB endpoint to bind (broadcasts)")
    db: LedgerAddress = Field(
        DEFAULT_DB,
        description="the ledger: an SQLite file, or a postgresql://user@host:port/db URL; reusing it resumes",
    )
    heartbeat_interval: PositiveFloat = Field(
        1.0, description="seconds between heartbeats", json_schema_extra={"flag": "--heartbeat"}
    )
    max_message_bytes: Annotated[int, Field(ge=1024)] = Field(
        LIMITS.requests.max_message_bytes, description="largest request frame accepted"
    )
    budget: NonNegativeFloat | None = Field(None, description="default budget per agent (none: unlimited)")
    budgets: dict[str, NonNegativeFloat] = Field(default_factory=dict, description="budget per agent name")
    curve_secret: Path | None = Field(None, description="the server's secret key file (turns CurveZMQ on)")
    authorized_keys: Path | None = Field(None, description="directory of the agents' public NAME.key files")
    operators: list[AgentName] = Field(
        default_factory=list, description="key names allowed to open and close markets (with CurveZMQ)"
    )
    operator_networks: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="without CurveZMQ, networks whose peers may open and close markets",
    )
    http: str | None = Field(
        None, description="HOST:PORT to serve the live dashboard page and /metrics on (default: none)"
    )
    stay: bool = Field(False, description="keep serving after the last market opened at start closes")
    insecure: bool = Field(
        False, description="allow endpoints reachable from other hosts without CurveZMQ (anyone may connect)"
    )
    peer_rate: PositiveFloat = Field(
        5000.0, description="request units per second one connection may use (1 per request and per KiB)"
    )
    address_rate: PositiveFloat = Field(
        20_000.0, description="request units per second all connections from one network address may use"
    )
    max_agents_per_address: Annotated[int, Field(ge=1)] = Field(
        10_000, description="the most agent names registered at once from one network address"
    )
    shard: str | None = Field(
        None, description="this process's name among the shards of an exchange on PostgreSQL (default: host:port)"
    )
    lease_seconds: PositiveFloat = Field(
        2.0, description="how long a shard owns its markets without renewing (on PostgreSQL): the failover time"
    )
    advertise_market: str | None = Field(
        None, description="the market endpoint other hosts reach this shard at (default: the one bound)"
    )
    advertise_feed: str | None = Field(None, description="the feed endpoint other hosts reach this shard at")
    max_connections_per_address: Annotated[int, Field(ge=1)] = Field(
        1000, description="the most connections one network address may hold to each socket at once"
    )
    max_memory_mib: PositiveFloat = Field(
        1024.0, description="resident memory (MiB) beyond which the connection receiving the most is dropped"
    )

    @model_validator(mode="after")
    def _curve_needs_both_keys(self) -> ExchangeSettings:
        if (self.curve_secret is None) != (self.authorized_keys is None):
            raise ValueError("CurveZMQ needs both curve_secret and authorized_keys")
        for network in self.operator_networks:
            ipaddress.ip_network(network, strict=False)
        return self

    def budget_of(self, agent: str) -> float | None:
        return self.budgets.get(agent, self.budget)

    def shard_name(self) -> str:
        """This process's name as a shard: the ``shard`` setting, else its host and market port."""
        if self.shard is not None:
            return self.shard
        return f"{socket.gethostname()}:{self.market.rpartition(':')[2]}"

    def advertised(self) -> tuple[str, str]:
        """The market and feed endpoints other hosts reach this process at."""
        return (
            self.advertise_market or reachable(self.market),
            self.advertise_feed or reachable(self.feed),
        )

    def is_operator_address(self, address: str) -> bool:
        """Whether a peer at ``address`` may operate (without CurveZMQ)."""
        try:
            peer = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(peer in ipaddress.ip_network(network, strict=False) for network in self.operator_networks)


class ServeSettings(MarketSettings, ExchangeSettings):
    """Everything ``auctioneer serve`` needs: the exchange, its default market settings and the
    markets to open at start."""

    model_config = SETTINGS_MODEL

    markets: list[MarketSpec] = Field(default_factory=list, description="markets to open at start (config only)")

    def market_defaults(self) -> dict[str, Any]:
        """The market settings every market starts from."""
        return self.model_dump(include=set(MarketSettings.model_fields))

    def default_market(self) -> MarketSettings | None:
        """The market to open at start from the flat settings: only if a prompt was given."""
        if "prompt" not in self.model_fields_set:
            return None
        return MarketSettings.model_validate(self.market_defaults())

    def market_settings(self, spec: MarketSpec) -> MarketSettings:
        """A market's settings: the exchange's defaults with the spec's on top (``ValidationError``)."""
        return MarketSettings.model_validate({**self.market_defaults(), **spec.settings})


def reachable(endpoint: str) -> str:
    """A bound endpoint as another host reaches it: ``*`` or ``0.0.0.0`` become this host's name."""
    scheme, _, rest = endpoint.partition("://")
    host, _, port = rest.rpartition(":")
    return f"{scheme}://{socket.gethostname()}:{port}" if host in ("*", "0.0.0.0") else endpoint


def participation_problem(settings: MarketSettings, spec: MarketSpec) -> tuple[str, str] | None:
    """Why a market of ``settings`` open to ``spec``'s participants could not run as configured:
    ``(setting, reason)``, or None. A reference weight needs something to weigh (a reference
    distribution or a reference agent), and a market limited to named agents cannot wait for more of
    them than it names."""
    if settings.reference_weight > 0 and settings.reference is None and spec.reference_agent is None:
        reason = f"{settings.reference_weight:g} weighs nothing: give a reference distribution or a reference agent"
        return "reference_weight", reason
    if spec.agents is not None:
        possible = set(spec.agents) | ({spec.reference_agent} if spec.reference_agent else set())
        if len(possible) < settings.min_agents:
            reason = f"the market waits for {settings.min_agents} agents but is limited to {len(possible)}"
            return "min_agents", reason + f" ({', '.join(sorted(possible)) or 'none'})"
    return None


def load_settings(values: Mapping[str, Any], overrides: Mapping[str, Any]) -> ServeSettings:
    """Settings from ``values`` (a config file's keys) with the non-None ``overrides`` (flags) on top."""
    merged = {**values, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        settings = ServeSettings.model_validate(merged)
    except ValidationError as exc:
        raise SettingsError(f"setting {describe_validation_error(exc)}") from None
    default = settings.default_market()
    problem = participation_problem(default, MarketSpec()) if default is not None else None
    if problem is not None:
        raise SettingsError(f"setting {problem[0]}: {problem[1]}")
    for number, spec in enumerate(settings.markets):  # each market to open at start, before any opens
        try:
            problem = participation_problem(settings.market_settings(spec), spec)
        except ValidationError as exc:
            raise SettingsError(f"setting markets[{number}].{describe_validation_error(exc)}") from None
        if problem is not None:
            raise SettingsError(f"setting markets[{number}].{problem[0]}: {problem[1]}")
    return settings
