"""The wire protocol's machine-readable schema: JSON Schema (draft 2020-12) of every message and every
error code, generated from the message models (SPEC.md section 9).

``python -m protocol.schema`` writes it to ``protocol/schema.json`` (``--check`` only says whether
the file is up to date). The test suite fails when the file is stale, and validates live traffic
against it. A msgpack ``bin`` is described as a base64 string: :func:`json_value` turns a decoded
msgpack value into the JSON value the schema describes.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from protocol.errors import ErrorCode
from protocol.messages import MESSAGE_TYPES, PROTOCOL_VERSION, Error

SCHEMA_PATH = Path(__file__).with_name("schema.json")
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def protocol_schema() -> dict[str, Any]:
    """The schema: ``$defs`` holds every message by its model's name (and the maps they nest), the
    root is ``oneOf`` the messages."""
    models = list(MESSAGE_TYPES.values())
    _, top = models_json_schema([(model, "validation") for model in models], ref_template="#/$defs/{model}")
    definitions: dict[str, Any] = top["$defs"]
    for model in models:
        message = definitions[model.__name__]
        message["properties"]["v"] = {"const": PROTOCOL_VERSION, "description": "the protocol's version"}
        message["required"] = ["type", *message.get("required", [])]
    error = definitions[Error.__name__]["properties"]["code"]
    error["enum"] = [str(code) for code in ErrorCode]
    error["description"] = "a stable error code (SPEC section 5); clients treat an unknown one as a refusal"
    return {
        "$schema": DIALECT,
        "$id": "https://token-auction.invalid/protocol/schema.json",
        "title": f"token-auction wire protocol, version {PROTOCOL_VERSION}",
        "description": (
            "Every message of protocol/SPEC.md: one msgpack map per ZeroMQ frame (feed frames without their "
            "topic prefix). A msgpack bin is written here as a base64 string; unknown fields are ignored."
        ),
        # A frame's message carries ``v``; a message nested in another (a sync_reply's open_round) need not.
        "oneOf": [{"$ref": f"#/$defs/{model.__name__}", "required": ["v"]} for model in models],
        "$defs": dict(sorted(definitions.items())),
    }


def schema_text() -> str:
    return json.dumps(protocol_schema(), indent=2, sort_keys=False) + "\n"


def definition_of(message_type: str) -> str:
    """The ``$defs`` name of the message whose ``type`` is ``message_type``."""
    return MESSAGE_TYPES[message_type].__name__


def frame_schema(schema: dict[str, Any], message_type: str) -> dict[str, Any]:
    """The part of ``schema`` a frame holding a message of ``message_type`` must match."""
    exact = {key: part for key, part in schema.items() if key != "oneOf"}
    return {**exact, "$ref": f"#/$defs/{definition_of(message_type)}", "required": ["v"]}


def json_value(value: Any) -> Any:
    """A decoded msgpack value as the JSON value the schema describes (bytes as base64 text)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {key: json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m protocol.schema", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if protocol/schema.json is stale")
    args = parser.parse_args(argv)
    text = schema_text()
    if args.check:
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
        if current != text:
            print(f"{SCHEMA_PATH} is stale: run python -m protocol.schema", file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_PATH} ({len(MESSAGE_TYPES)} messages, {len(ErrorCode)} error codes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
