"""Build Faust tables from the declarations in :mod:`topology.tables`."""

from __future__ import annotations

from typing import Any

from topology.settings import Settings
from topology.tables import TableSpec


def make_table(app: Any, spec: TableSpec, settings: Settings) -> Any:
    """A bytes→bytes table for ``spec`` (values are JSON or Avro encoded by the agent)."""
    kwargs: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "partitions": spec.partitions(settings),
        "help": spec.doc,
    }
    if spec.memory:
        # A GlobalTable over several workers needs one partition and a recovery buffer of
        # one to avoid Faust's recovery loop (faust/tables/globaltable.py docstring).
        kwargs.update(store="memory://", use_partitioner=True, recovery_buffer_size=1)
    factory = app.GlobalTable if spec.global_ else app.Table
    return factory(spec.name, **kwargs)
