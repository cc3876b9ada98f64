"""Stage logic: plain Python, no Faust or Kafka import.

The live agents, the offline ``tickstream process`` path, replay, training, benchmarks and
tests all drive these very classes. Every stateful stage exposes ``snapshot() -> dict``
(JSON-serialisable) and ``restore(dict)`` so its state can live in a Faust table.

Importing this package does nothing else: whether the per-tick modules run compiled is
decided by the entry points (:func:`stages.native.install`).
"""
