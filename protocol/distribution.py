"""The distribution payload: parallel arrays of token strings and probabilities, validated.

Probabilities travel either as a msgpack array of floats or, for zero-copy decoding, as one
``bin`` of little-endian IEEE-754 float64 values (8 bytes per token). Validation is vectorised:
no Python work per probability, and per-token work only where the C-level string operations
(``set``, ``join``, ``encode``) need it.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from numpy.typing import NDArray
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

MAX_TOKEN_BYTES = 256
DEFAULT_MAX_SUPPORT = 4096
SUM_TOLERANCE = 1e-6
SMALL_SUPPORT = 64  # probabilities checked with Python's sum and min up to this many
# Longest token (in characters) that can't exceed MAX_TOKEN_BYTES whatever its characters.
SAFE_TOKEN_CHARS = MAX_TOKEN_BYTES // 4


def _as_float_array(value: Any) -> NDArray[np.float64]:
    if isinstance(value, np.ndarray):
        return value.astype(np.float64, copy=False)
    if isinstance(value, bytes | bytearray | memoryview):
        if len(value) % 8:
            raise ValueError("binary probabilities must be a multiple of 8 bytes (float64)")
        return np.frombuffer(value, dtype="<f8").astype(np.float64, copy=False)
    if isinstance(value, list | tuple):
        if not all(type(v) in (float, int) for v in value):
            raise ValueError("probabilities must be numbers")
        return np.array(value, dtype=np.float64)
    raise ValueError("probabilities must be an array of numbers or float64 bytes")


def probs_bytes(probs: NDArray[np.float64]) -> bytes:
    """Probabilities as they travel: little-endian float64 bytes."""
    return np.ascontiguousarray(probs, dtype="<f8").tobytes()


ProbabilityArray = Annotated[
    NDArray[np.float64],
    BeforeValidator(_as_float_array),
    PlainSerializer(probs_bytes, return_type=bytes),
    WithJsonSchema(
        {
            "description": "probs[k] is the probability of tokens[k]: finite, >= 0, summing to 1 within 1e-6",
            "oneOf": [
                {"type": "array", "items": {"type": "number", "minimum": 0}},
                {
                    "type": "string",
                    "contentEncoding": "base64",
                    "description": "a msgpack bin of little-endian float64 values, 8 bytes a token, as base64",
                },
            ],
        }
    ),
]


class Distribution(BaseModel):
    """A sparse next-token distribution: ``probs[k]`` is the probability of ``tokens[k]``."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="ignore")

    tokens: list[Annotated[str, WithJsonSchema({"type": "string", "minLength": 1})]] = Field(
        json_schema_extra={
            "minItems": 1,
            "uniqueItems": True,
            "description": "distinct tokens, 256 UTF-8 bytes at most",
        }
    )
    probs: ProbabilityArray

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Distribution:
        check_distribution(self.tokens, self.probs, self.support_limit(info.context or {}))
        return self

    def support_limit(self, context: dict[str, Any]) -> int:
        """The largest support accepted: ``max_support`` from the validation context."""
        return int(context.get("max_support", DEFAULT_MAX_SUPPORT))

    @classmethod
    def from_mapping(cls, mapping: dict[str, float], max_support: int = DEFAULT_MAX_SUPPORT) -> Distribution:
        return cls.model_validate(
            {"tokens": list(mapping), "probs": list(mapping.values())}, context={"max_support": max_support}
        )

    def as_mapping(self) -> dict[str, float]:
        return dict(zip(self.tokens, self.probs.tolist(), strict=True))

    def wire_map(self) -> dict[str, Any]:
        """What ``model_dump`` gives, without pydantic's serialiser: tokens, then the probabilities' bytes."""
        return {"tokens": self.tokens, "probs": probs_bytes(self.probs)}


def check_distribution(tokens: list[str], probs: NDArray[np.float64], max_support: int) -> None:
    """Raise ``ValueError`` naming the first problem with a (tokens, probs) pair."""
    check_support(tokens, probs, max_support)
    check_token_text(tokens)
    check_probabilities(probs)


def check_support(tokens: list[str], probs: NDArray[np.float64], max_support: int) -> None:
    """As many probabilities as tokens, at least one and at most ``max_support`` tokens, all distinct."""
    if len(tokens) != len(probs):
        raise ValueError(f"tokens and probs differ in length ({len(tokens)} vs {len(probs)})")
    if not tokens:
        raise ValueError("a distribution needs at least one token")
    if len(tokens) > max_support:
        raise ValueError(f"support of {len(tokens)} tokens exceeds the maximum of {max_support}")
    if len(set(tokens)) != len(tokens):
        raise ValueError("tokens must be distinct")


def check_token_text(tokens: list[str]) -> None:
    """Every token a non-empty string of valid Unicode, at most ``MAX_TOKEN_BYTES`` in UTF-8."""
    if "" in tokens:
        raise ValueError("tokens must be non-empty strings")
    try:
        total_bytes = len("".join(tokens).encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError("tokens must be valid Unicode (no lone surrogates)") from exc
    if total_bytes > MAX_TOKEN_BYTES and max(map(len, tokens)) > SAFE_TOKEN_CHARS:
        longest = max(len(t.encode("utf-8")) for t in tokens)
        if longest > MAX_TOKEN_BYTES:
            raise ValueError(f"a token is {longest} UTF-8 bytes; the maximum is {MAX_TOKEN_BYTES}")


def check_probabilities(probs: NDArray[np.float64]) -> None:
    """Finite, non-negative and summing to 1 within ``SUM_TOLERANCE``."""
    # Two reductions decide everything: a NaN or infinity makes the sum non-finite, and with the
    # minimum non-negative a finite sum near 1 bounds every probability. Up to SMALL_SUPPORT values,
    # Python's own sum and min over a list are faster than numpy's fixed cost per reduction.
    if len(probs) <= SMALL_SUPPORT:
        values = probs.tolist()
        total, smallest = float(sum(values)), min(values)
    else:
        total, smallest = float(np.add.reduce(probs)), float(np.minimum.reduce(probs))
    if not math.isfinite(total):
        raise ValueError("probabilities must be finite")
    if smallest < 0:
        raise ValueError("probabilities must not be negative")
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise ValueError(f"probabilities sum to {total:.9g}, not 1 (tolerance {SUM_TOLERANCE})")
