"""Arrow types in and out: one stored spelling per logical type, refusals, restored labels.

Every Arrow type a client can send either round-trips exactly (values and type, after the
spelling below) through Flight, Flight SQL and HTTP, or is refused at ingest with a message
naming the column and the type. The stored spelling is what DuckDB reads back from the
Parquet pyarrow writes (measured with duckdb 1.5.5 and pyarrow 26), so a table read back
from a dataset appends to it unchanged: its schema normalises to the stored one.

    sent                                         stored (and read back)
    int8..int64, uint8..uint64, float32/64, bool the same
    decimal32/64/128/256 with precision <= 38    decimal128(p, s)
    string, large_string, string_view            string
    binary, large_binary, binary_view,           binary
      fixed_size_binary
    date32, date64 (whole days)                  date32
    time32[s|ms], time64[us|ns] (whole us)       time64[us]
    timestamp[s|ms|us] / timestamp[ns]           timestamp[us] / timestamp[ns]
    timestamp[any unit, tz=Z] (whole us)         timestamp[us, tz=Z]  (zone Z kept)
    duration[unit]                               duration[unit]
    list, large_list, list_view,                 list<item: ...>
      large_list_view, fixed_size_list
    struct, map                                  the same, fields normalised
    dictionary<any index, V>                     V's stored spelling (the decoded values)

Refused: null, float16, decimals past 38 digits, intervals, unions, run-end encoded and
extension types (uuid, json, ...): DuckDB would read each back as another type or not at all.

DuckDB keeps no zone per column (TIMESTAMPTZ answers in the session zone, UTC) and reads a
duration as its int64 count, so two labels are restored on the way out, from the stored
schema (the source of truth): ``restore_labels`` gives a result column that selects a stored
column, and whose type is what DuckDB answers for it, the stored type back. These only
relabel (zone, duration unit, list item name): zero-copy views, values never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from flightlake.errors import InvalidInput

MAX_DECIMAL_DIGITS = 38  # DuckDB DECIMAL's limit; wider Parquet decimals are read as DOUBLE


class _Refused(Exception):
    """A type flightlake does not store; the message says why and what to send instead."""


def _why_refused(kind: pa.DataType) -> str | None:
    """Why ``kind`` (itself, not its children) cannot be stored, or None when it can."""
    if isinstance(kind, pa.BaseExtensionType):
        return (
            f"extension types are not stored (DuckDB reads {kind.extension_name} back as "
            f"another type); send its storage type {kind.storage_type}"
        )
    if pa.types.is_null(kind):
        return "a column of type null has no values to type it by; cast it to the type it holds"
    if pa.types.is_float16(kind):
        return "DuckDB reads halffloat back as float32; send float32"
    if pa.types.is_decimal(kind) and kind.precision > MAX_DECIMAL_DIGITS:
        return (
            f"decimals are stored with at most {MAX_DECIMAL_DIGITS} digits (DuckDB reads wider "
            "ones back as double); send a string or a narrower decimal"
        )
    if pa.types.is_interval(kind):
        return "Parquet has no lossless interval type; send a duration or its parts as integers"
    if pa.types.is_union(kind):
        return "Parquet has no union type; send one column per member"
    if pa.types.is_run_end_encoded(kind):
        return "run-end encoded columns are not stored; send the decoded values"
    if pa.types.is_struct(kind) and kind.num_fields == 0:
        return "Parquet cannot store a struct with no fields"
    return None


def _stored(kind: pa.DataType) -> pa.DataType:
    """The stored spelling of ``kind``; raises _Refused for types that are not stored."""
    why = _why_refused(kind)
    if why is not None:
        raise _Refused(why)
    if pa.types.is_dictionary(kind):
        return _stored(kind.value_type)
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return pa.string()
    if (
        pa.types.is_large_binary(kind)
        or pa.types.is_binary_view(kind)
        or pa.types.is_fixed_size_binary(kind)
    ):
        return pa.binary()
    if pa.types.is_decimal(kind):
        return pa.decimal128(kind.precision, kind.scale)
    if pa.types.is_date64(kind):
        return pa.date32()
    if pa.types.is_time(kind):
        return pa.time64("us")
    if pa.types.is_timestamp(kind):
        unit = "ns" if kind.unit == "ns" and not kind.tz else "us"
        return pa.timestamp(unit, kind.tz)
    if (
        pa.types.is_list(kind)
        or pa.types.is_large_list(kind)
        or pa.types.is_list_view(kind)
        or pa.types.is_large_list_view(kind)
        or pa.types.is_fixed_size_list(kind)
    ):
        return pa.list_(_stored(kind.value_type))
    if pa.types.is_map(kind):
        return pa.map_(_stored(kind.key_type), _stored(kind.item_type))
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _stored(f.type)) for f in kind])
    return kind


def storage_type(kind: pa.DataType, column: str = "") -> pa.DataType:
    """The stored spelling of ``kind`` (see the module docstring).

    Raises InvalidInput naming ``column`` and the type when the type is not stored.
    """
    try:
        return _stored(kind)
    except _Refused as exc:
        where = f"column {column!r} has type {kind}" if column else f"type {kind}"
        raise InvalidInput(f"{where}, which flightlake does not store: {exc}") from None


def normalize_schema(schema: pa.Schema) -> pa.Schema:
    """What every stored object carries: all fields nullable, no metadata, and one spelling
    per logical type (``storage_type``), so a pandas large_string column and a polars string
    column land as the same type and append to each other.

    Raises InvalidInput naming the first column whose type is not stored.
    """
    return pa.schema([pa.field(f.name, storage_type(f.type, f.name)) for f in schema])


def as_stored(schema: pa.Schema) -> pa.Schema:
    """``schema`` in today's stored spellings; a dataset stored by an older version (e.g. a
    CSV ``timestamp[s]`` column of v0.1) compares by this, so appends to it keep working.
    A schema holding a type no longer stored is returned as it is."""
    try:
        return normalize_schema(schema)
    except InvalidInput:
        return schema


def _spelled(kind: pa.DataType) -> str:
    """The full spelling of a type, field names included (``==`` ignores list item names)."""
    return str(kind)


def _convert(array: pa.Array, target: pa.DataType) -> pa.Array:
    if pa.types.is_dictionary(array.type):
        assert isinstance(array, pa.DictionaryArray)
        # Decode after converting the (small) dictionary: take() has no kernel for view
        # types, and casting the values first is cheaper anyway.
        values = _convert(array.dictionary, target)
        return values.take(array.indices)
    if pa.types.is_list_view(array.type) or pa.types.is_large_list_view(array.type):
        # pyarrow 26's list_view -> list cast makes an offsets buffer one entry short
        # (invalid arrays); rebuild the offsets from the sizes instead.
        sizes = pc.fill_null(pc.list_value_length(array), 0).cast(pa.int64())
        ends = pc.cumulative_sum(sizes)
        offsets = pa.concat_arrays([pa.array([0], pa.int64()), ends]).cast(pa.int32())
        values = _convert(pc.list_flatten(array), target.value_type)
        mask = array.is_null() if array.null_count else None
        return pa.ListArray.from_arrays(offsets, values, type=target, mask=mask)
    return array.cast(target)


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` in the stored spelling ``schema`` (same column names, in order).

    Only the columns whose type differs are converted, with safe casts: a value the stored
    type cannot hold exactly (a timestamp with nanoseconds stored in microseconds, a date64
    that is not a whole day) raises InvalidInput naming the column, the type and the value.
    """
    if batch.schema.equals(schema):
        return batch
    arrays = []
    for name, column, field in zip(batch.schema.names, batch.columns, schema, strict=True):
        if column.type == field.type and _spelled(column.type) == _spelled(field.type):
            arrays.append(column)
            continue
        try:
            converted = _convert(column, field.type)
            converted.validate()  # structural check: a faulty kernel must not reach Parquet
            arrays.append(converted)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise InvalidInput(
                f"column {name!r}: cannot store {column.type} as {field.type}: {exc}"
            ) from exc
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# -- the way out --------------------------------------------------------------------------
def _answered(kind: pa.DataType) -> pa.DataType:
    """The type DuckDB answers for a column stored as ``kind`` where only labels differ."""
    if pa.types.is_timestamp(kind) and kind.tz:
        return pa.timestamp(kind.unit, "UTC")  # the session zone, fixed to UTC
    if pa.types.is_duration(kind):
        return pa.int64()
    if pa.types.is_list(kind):
        return pa.list_(pa.field("l", _answered(kind.value_type)))
    if pa.types.is_map(kind):
        return pa.map_(_answered(kind.key_type), _answered(kind.item_type))
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _answered(f.type)) for f in kind])
    return kind


def stored_labels(schemas: Iterable[pa.Schema]) -> dict[str, pa.DataType]:
    """Column name -> stored type over ``schemas``, for the columns DuckDB answers with other
    labels; a name two schemas give different types is left out (ambiguous)."""
    labels: dict[str, pa.DataType] = {}
    ambiguous: set[str] = set()
    for schema in schemas:
        for field in schema:
            if _spelled(_answered(field.type)) == _spelled(field.type):
                continue
            seen = labels.get(field.name)
            if seen is not None and _spelled(seen) != _spelled(field.type):
                ambiguous.add(field.name)
            labels[field.name] = field.type
    for name in ambiguous:
        labels.pop(name)
    return labels


def restore_labels(schema: pa.Schema, labels: Mapping[str, pa.DataType]) -> pa.Schema | None:
    """The schema a result with ``schema`` should carry given the stored ``labels``
    (``stored_labels``), or None when it already carries it."""
    if not labels:
        return None
    fields = []
    changed = False
    for field in schema:
        stored = labels.get(field.name)
        if (
            stored is not None
            and _spelled(field.type) != _spelled(stored)
            and _spelled(field.type) == _spelled(_answered(stored))
        ):
            fields.append(field.with_type(stored))
            changed = True
        else:
            fields.append(field)
    return pa.schema(fields, metadata=schema.metadata) if changed else None


def relabel(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with the types of ``schema`` (from ``restore_labels``): the relabelled
    columns are zero-copy views of the same buffers (same layout, other labels)."""
    arrays = [
        column
        if column.type.equals(field.type) and _spelled(column.type) == _spelled(field.type)
        else _view(column, field.type)
        for column, field in zip(batch.columns, schema, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _view(column: pa.Array, kind: pa.DataType) -> pa.Array:
    try:
        return column.view(kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return column.cast(kind)  # same values; a layout view() does not cover
