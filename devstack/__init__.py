"""Local development helpers: the Kafka-protocol broker launcher, worker processes on it,
and synchronous topic readers (tests, benchmarks, the smoke run)."""
