"""librdkafka's own log, through Python logging at a sane level.

Left alone, librdkafka writes every failed connection attempt to stderr itself
(``%3|...|FAIL|... Connect to ipv4#127.0.0.1:9 failed``), several a second per broker
address, in a format no handler controls. :func:`with_client_logging` adds confluent-kafka's
``logger`` setting (and an ``error_cb``) to a client configuration, so the lines go to the
``librdkafka`` logger instead, delivered on ``poll()``/``flush()``:

* a connection failure (``FAIL``) or client error is logged at WARNING the first time it
  is seen for an address, then at DEBUG for :data:`REPEAT_S` seconds: a broker that is gone
  is one line a minute, not hundreds;
* librdkafka's own levels map to Python's otherwise (3 ERROR, 4 WARNING, 5-6 INFO, 7 DEBUG).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

#: A repeated connection failure or client error is logged at WARNING at most this often.
REPEAT_S = 60.0
_log = logging.getLogger("librdkafka")
_NUMBERS = re.compile(r"\d+(?:\.\d+)?(?:ms|s)?\b")


class RdKafkaLog:
    """The object confluent-kafka calls as ``logger.log(level, "%s [%s] %s", fac, name, msg)``."""

    def __init__(self, logger: logging.Logger = _log, repeat_s: float = REPEAT_S) -> None:
        self.logger = logger
        self.repeat_s = repeat_s
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def _first_in_a_while(self, text: str) -> bool:
        # the same failure again (numbers vary: "after 0ms"; the log line and the error
        # callback report one failure twice, with and without the "FAC [client] [thread]: ")
        key = _NUMBERS.sub("#", text.rsplit("]: ", 1)[-1])
        now = time.monotonic()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last < self.repeat_s:
                return False
            self._seen[key] = now
            return True

    def log(self, level: int, fmt: str, *args: Any) -> None:
        text = fmt % args if args else fmt
        fac = str(args[0]) if args else ""
        if fac in ("FAIL", "ERROR") or level >= logging.ERROR:
            level = logging.WARNING if self._first_in_a_while(text) else logging.DEBUG
        self.logger.log(level, "%s", text)

    def error(self, err: Any) -> None:
        """``error_cb``: a client-level error (all brokers down, authentication failed)."""
        text = err.str() if hasattr(err, "str") else str(err)
        level = logging.WARNING if self._first_in_a_while(text) else logging.DEBUG
        self.logger.log(level, "kafka client: %s", text)


_shared = RdKafkaLog()


def with_client_logging(conf: dict[str, Any]) -> dict[str, Any]:
    """``conf`` with librdkafka's log and errors routed to Python logging (a caller's own
    ``logger`` or ``error_cb`` is kept)."""
    conf.setdefault("logger", _shared)
    conf.setdefault("error_cb", _shared.error)
    return conf


__all__ = ["REPEAT_S", "RdKafkaLog", "with_client_logging"]
