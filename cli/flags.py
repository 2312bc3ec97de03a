"""Command-line flags generated from the settings models: one flag per scalar field, never restated.

``--max-tokens`` sets ``max_tokens``; a field may name its own flag (``json_schema_extra``'s
``flag``); the help text is the field's ``description``; rule names offer the registries' names as
choices; a boolean is a switch (``--stay``) and a list of names takes commas (``--operators a,b``).
A field whose ``json_schema_extra`` says ``repeat`` takes its flag once per item (``--param a=1
--param b=2``); a required field's flag is required. Mapping fields (``reference``, ``budgets``)
are set in a config file only. Flags left out are
``None``, so a config file's values stand unless a flag is given.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from auctioneer.mechanism import AGGREGATIONS, PAYMENTS
from protocol.draw import DRAW_MODES
from protocol.errors import UserError, describe_validation_error

ModelT = TypeVar("ModelT", bound=BaseModel)


class FlagError(UserError):
    """Flags that cannot run together (the message names the setting and says why)."""


CHOICES: dict[str, Collection[str]] = {"aggregation": AGGREGATIONS, "payment": PAYMENTS, "mode": DRAW_MODES}
SCALARS = (str, int, float, Path, bool)


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _scalar_type(annotation: Any) -> Any:
    """``float`` for ``float``, ``float | None`` or ``Annotated[float, ...]``; :func:`comma_list` for a
    list of strings (a field marked ``repeat`` takes the flag once per item instead); None for
    anything else."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _scalar_type(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _scalar_type(options[0]) if len(options) == 1 else None
    if typing.get_origin(annotation) is list and _scalar_type(typing.get_args(annotation)[0]) is str:
        return comma_list
    return annotation if annotation in SCALARS else None


def flag_of(name: str, field: FieldInfo) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return str(extra.get("flag") or "--" + name.replace("_", "-"))


def flag_fields(model: type[BaseModel], exclude: Iterable[str] = ()) -> dict[str, FieldInfo]:
    """The fields of ``model`` that have a flag, in declaration order."""
    skipped = set(exclude)
    return {
        name: field
        for name, field in model.model_fields.items()
        if name not in skipped and _scalar_type(field.annotation) is not None
    }


def add_settings_flags(
    parser: argparse.ArgumentParser, model: type[BaseModel], exclude: Iterable[str] = (), title: str = "settings"
) -> None:
    """Add a flag for every scalar field of ``model``; :func:`settings_values` reads them back."""
    group = parser.add_argument_group(title)
    fields = flag_fields(model, exclude)
    for name, field in fields.items():
        scalar = _scalar_type(field.annotation)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if scalar is bool:
            group.add_argument(
                flag_of(name, field), dest=name, action="store_true", default=None, help=field.description
            )
        elif extra.get("repeat"):
            metavar = str(extra.get("metavar", name.upper()))
            group.add_argument(
                flag_of(name, field), dest=name, action="append", metavar=metavar, help=field.description
            )
        else:
            choices = sorted(CHOICES[name]) if name in CHOICES else None
            group.add_argument(
                flag_of(name, field),
                dest=name,
                type=scalar,
                choices=choices,
                required=field.is_required(),
                help=field.description,
            )
    parser.set_defaults(settings_fields=(*(parser.get_default("settings_fields") or ()), *fields))


def settings_values(args: argparse.Namespace, model: type[BaseModel] | None = None) -> dict[str, Any]:
    """The settings the user gave as flags (flags left out are not included); only ``model``'s, if given."""
    names: tuple[str, ...] = getattr(args, "settings_fields", ())
    if model is not None:
        names = tuple(name for name in names if name in model.model_fields)
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def settings_from_flags(args: argparse.Namespace, model: type[ModelT]) -> ModelT:
    """``model`` from the flags the user gave; a :class:`FlagError` in one line if they cannot run."""
    try:
        return model.model_validate(settings_values(args, model))
    except ValidationError as exc:
        raise FlagError(describe_validation_error(exc)) from None


def as_arguments(model: type[BaseModel], values: Mapping[str, Any]) -> list[str]:
    """``["--max-tokens", "12", ...]``: settings written as the flags of ``model`` (for a child process)."""
    fields = model.model_fields
    arguments: list[str] = []
    for name, value in values.items():
        if value is None or value is False:
            continue
        flag = flag_of(name, fields[name])
        if value is True:
            arguments.append(flag)
        else:
            arguments += [flag, ",".join(value) if isinstance(value, list) else str(value)]
    return arguments
