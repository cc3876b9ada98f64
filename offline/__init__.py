"""Offline runs of the live stages: ``tickstream process`` (sharded over CPUs) and ``train``.

Everything here drives the very stage classes the live worker runs (``stages``), with no
Kafka in between; the replay, backtest and loader commands belong here too.
"""
