"""Records to columns: decoded records of one topic -> the column arrays of its table.

The input is what the codec's ``decode_dict`` returns (a dict per record, the field names
of ``schemas/*.avsc``) or record objects' ``to_dict()``. Stored column names are the Avro
field names, so one loop per column builds every table. NULLs: ``None`` in a
``Nullable(Float64)`` column becomes NaN (both backends write NaN there as NULL); in other
nullable columns it stays ``None`` in an object array.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from storage.backend import Columns
from storage.schema import BY_TOPIC, Column, Table

_NUMERIC = {"Float64": np.float64, "Int64": np.int64, "Int32": np.int32,
            "UInt32": np.uint32, "UInt8": np.uint8}


def column_array(column: Column, values: Sequence[Any]) -> np.ndarray[Any, Any]:
    """One column's values as the array the backends take."""
    base = column.base_type
    if base == "Float64":
        if column.nullable:
            return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        return np.array(values, dtype=np.float64)
    if base in _NUMERIC and not column.nullable:
        return np.array(values, dtype=_NUMERIC[base])
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def to_columns(table: Table, records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The columns of ``table`` from records (dicts keyed by the Avro field names)."""
    recs = records if isinstance(records, list) else list(records)
    return {c.name: column_array(c, [r[c.name] for r in recs]) for c in table.columns}


def columns_from_arrays(table: Table, arrays: Mapping[str, np.ndarray[Any, Any]]
                        ) -> dict[str, Any]:
    """The columns of ``table`` from field arrays decoded column-wise
    (:func:`schemas.columnar.decode_columns`), in the dtypes :func:`column_array` gives."""
    out: dict[str, Any] = {}
    for c in table.columns:
        a = arrays[c.name]
        base = c.base_type
        if base == "Float64" or (base in _NUMERIC and not c.nullable):
            out[c.name] = np.ascontiguousarray(a, dtype=_NUMERIC[base])
        elif a.dtype == object:
            out[c.name] = a
        else:  # a nullable integer column read without nulls: Python ints, as from rows
            out[c.name] = a.astype(object)
    return out


def table_for_topic(topic: str) -> Table:
    """The table that stores the logical topic ``topic`` (KeyError if none does)."""
    return BY_TOPIC[topic]


def row_count(columns: Columns) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def concat(parts: Sequence[Columns]) -> dict[str, Any]:
    """Several column batches of one table as one."""
    if len(parts) == 1:
        return dict(parts[0])
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
