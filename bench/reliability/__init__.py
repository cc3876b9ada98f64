"""``make reliability``: a fault suite on real two-broker Lean ticks, figures into
docs/reliability.md and one JSON object on the last line (``python -m bench.reliability``)."""
