"""Checks a command runs before it starts a client, each failing with one line that says
what to change.

A Kafka client pointed at an address where nothing listens retries for its whole timeout
(librdkafka: 30 s of log lines; Faust's aiokafka: a traceback at the end), and Faust's web
server on a port another worker holds dies with ``OSError: [Errno 98]``. A plain TCP
connect, or bind, answers either in well under a second.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence

from topology.settings import Settings
from topology.state_guard import _accepts_connections


class PreflightError(RuntimeError):
    """The command cannot start; the message is the one line printed (exit 1)."""


def broker_answers(settings: Settings, timeout_s: float = 3.0) -> bool:
    """Whether any bootstrap address accepts a TCP connection."""
    return any(_accepts_connections(s, timeout_s) for s in settings.kafka_bootstrap_servers)


def require_broker(settings: Settings) -> None:
    """Raise :class:`PreflightError` when no bootstrap address answers."""
    if not broker_answers(settings):
        raise PreflightError(
            f"no Kafka broker answers at {settings.bootstrap}: start one (make broker) or "
            "set TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS to where it runs")


def require_free_port(port: int, host: str = "127.0.0.1", *, what: str = "web server",
                      setting: str = "TICKSTREAM_WEB_PORT") -> None:
    """Raise :class:`PreflightError` when ``host:port`` cannot be bound because something
    (another worker, most often) already listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return  # not ours to judge (e.g. an address this host lacks): Faust reports
            raise PreflightError(
                f"port {port} on {host} (the worker's {what}) is already in use, most likely "
                f"by another worker on this machine: set {setting} to a free port for this "
                "one (or stop the other)") from None


def web_option(faust_args: Sequence[str], names: tuple[str, ...]) -> str | None:
    """The value of a ``faust worker`` option among the extra arguments, if given."""
    for i, arg in enumerate(faust_args):
        for name in names:
            if arg == name and i + 1 < len(faust_args):
                return faust_args[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def require_worker_can_start(settings: Settings, faust_args: Sequence[str]) -> None:
    """What a worker needs before Faust starts: a broker that answers, and its web port
    free (unless ``--without-web``); :class:`PreflightError` naming the fix otherwise."""
    require_broker(settings)  # one line at once, not aiokafka's retries and a traceback
    if "--without-web" in faust_args:
        return
    port = web_option(faust_args, ("-p", "--web-port"))
    bind = web_option(faust_args, ("-b", "--web-bind")) or "127.0.0.1"
    require_free_port(int(port) if port and port.isdigit() else settings.web_port,
                      "127.0.0.1" if bind in ("0.0.0.0", "") else bind,
                      setting="--web-port" if port else "TICKSTREAM_WEB_PORT")
