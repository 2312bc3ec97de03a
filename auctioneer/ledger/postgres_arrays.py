"""A tick's columns as PostgreSQL arrays in the binary wire format, built in bulk.

A tick's commit sends each table's rows as one array per column (``unnest``). psycopg dumps a list
into an array one element at a time in Python, about a microsecond each: some 40 elements a round,
the largest cost of a commit on the shard's side. A :class:`Column` is dumped whole instead: a
numeric column by numpy (one length word and one big-endian value per element, laid out as a
structured array), a text or bytea column by one join. The bytes are PostgreSQL's own binary array
format (``array_send``): a header of dimensions and element type, then each element as its length
and its bytes (length -1 for NULL).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
from psycopg.adapt import AdaptersMap, Dumper
from psycopg.pq import Format

HEADER = struct.Struct(">iiiii")  # one dimension: ndim, has NULLs, element oid, length, lower bound
EMPTY = struct.Struct(">iii")  # no dimension: ndim 0, no NULLs, element oid
LENGTH = struct.Struct(">i")
NULL = LENGTH.pack(-1)


def numeric_array(element_oid: int, dtype: str, values: Sequence[Any]) -> bytes:
    """A one-dimensional array of fixed-size numbers (no NULLs)."""
    if not values:
        return EMPTY.pack(0, 0, element_oid)
    body = np.empty(len(values), dtype=[("length", ">i4"), ("value", dtype)])
    body["length"] = body.dtype["value"].itemsize
    body["value"] = values
    return HEADER.pack(1, 0, element_oid, len(values), 1) + body.tobytes()


def varlena_array(element_oid: int, values: Sequence[bytes | str | None]) -> bytes:
    """A one-dimensional array of text (UTF-8) or bytea elements, NULLs allowed."""
    if not values:
        return EMPTY.pack(0, 0, element_oid)
    encoded = [value.encode() if isinstance(value, str) else value for value in values]
    nulls = any(value is None for value in encoded)
    parts = chain.from_iterable((NULL,) if value is None else (LENGTH.pack(len(value)), value) for value in encoded)
    return HEADER.pack(1, int(nulls), element_oid, len(values), 1) + b"".join(parts)


@dataclass(frozen=True)
class ArrayType:
    """A PostgreSQL array type: its oid, its element's, and the element's numpy dtype (None: each
    element has a length of its own, text or bytea)."""

    oid: int
    element_oid: int
    dtype: str | None

    def dump(self, values: Sequence[Any]) -> bytes:
        if self.dtype is None:
            return varlena_array(self.element_oid, values)
        return numeric_array(self.element_oid, self.dtype, values)


ARRAY_TYPES = {
    "bigint": ArrayType(1016, 20, ">i8"),
    "integer": ArrayType(1007, 23, ">i4"),
    "float8": ArrayType(1022, 701, ">f8"),
    "text": ArrayType(1009, 25, None),
    "bytea": ArrayType(1001, 17, None),
}


class Column:
    """One column of rows, sent as one PostgreSQL array of its type (a subclass per type)."""

    __slots__ = ("values",)
    array: ArrayType

    def __init__(self, values: Sequence[Any]) -> None:
        self.values = values


class ColumnDumper(Dumper):
    """Dumps a :class:`Column` whole, in the binary format (a subclass per type)."""

    format = Format.BINARY
    array: ArrayType

    def dump(self, obj: Any) -> bytes:
        return self.array.dump(obj.values)


COLUMNS: dict[str, type[Column]] = {
    name: type(f"{name.capitalize()}Column", (Column,), {"__slots__": (), "array": array})
    for name, array in ARRAY_TYPES.items()
}
DUMPERS: dict[str, type[ColumnDumper]] = {
    name: type(f"{name.capitalize()}ColumnDumper", (ColumnDumper,), {"oid": array.oid, "array": array})
    for name, array in ARRAY_TYPES.items()
}


def column(kind: str, values: Sequence[Any]) -> Column:
    """``values`` as a column of the PostgreSQL type ``kind`` (a key of :data:`ARRAY_TYPES`)."""
    return COLUMNS[kind](values)


def register(adapters: AdaptersMap) -> None:
    """Let ``adapters`` (a connection's) send :class:`Column` values."""
    for name, column_type in COLUMNS.items():
        adapters.register_dumper(column_type, DUMPERS[name])
