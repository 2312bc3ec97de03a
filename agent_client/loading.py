"""Loading a user's agent class from ``package.module:Class`` with ``key=value`` parameters."""

from __future__ import annotations

import importlib
import json
import logging
from typing import Any

from agent_client.agent import Agent, FunctionAgent
from protocol.errors import UserError

log = logging.getLogger(__name__)


class AgentLoadError(UserError):
    """The agent reference or its parameters do not work; the message says how to fix it."""


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``["bid=2", "phrase=Hello world"]`` -> ``{"bid": 2, "phrase": "Hello world"}`` (JSON values where they parse)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise AgentLoadError(f"--param {pair!r} must look like key=value")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def load_agent(reference: str, params: dict[str, Any]) -> Agent:
    """Import ``module:attribute`` and build the agent (a class or a factory taking ``params``)."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise AgentLoadError(f"--agent {reference!r} must look like package.module:ClassName")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AgentLoadError(f"cannot import {module_name!r}: {exc}") from None
    target = getattr(module, attribute, None)
    if target is None:
        raise AgentLoadError(f"module {module_name!r} has no {attribute!r}")
    if not isinstance(target, type):
        if params:
            raise AgentLoadError(f"{reference} is a function; it takes no --param (make it a class to configure it)")
        return FunctionAgent(target)
    try:
        built = target(**params)
    except TypeError as exc:
        raise AgentLoadError(f"cannot build {reference} with parameters {sorted(params)}: {exc}") from None
    except (OSError, ValueError) as exc:  # what a constructor says of its parameters' values (a model not found)
        log.debug("building %s failed", reference, exc_info=True)
        raise AgentLoadError(f"cannot build {reference}: {exc}") from None
    if not isinstance(built, Agent):
        raise AgentLoadError(f"{reference} is not an Agent (subclass agent_client.Agent)")
    return built
