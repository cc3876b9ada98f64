"""How ``tickstream`` ends when a command fails: one line on stderr and a documented exit code.

:func:`report` turns any exception a command raised into ``tickstream COMMAND: what went
wrong: what to do`` and the exit code (:data:`EXIT_CODES`); the traceback is printed only
with ``--debug``. Errors this project raises already say what to change; for the rest
(a file that is not there, not text, not writable) the line names the file.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import TextIO

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_PROMOTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

#: The exit codes every command uses (``tickstream --help`` prints them).
EXIT_CODES = (
    "exit codes: 0 done; 1 failed (unusable input, broker or store unreachable, a "
    "collector or path failed); 2 bad usage or configuration (a TICKSTREAM_* variable, a "
    "config file); 3 train: model not promoted; 130 interrupted (Ctrl-C). Add --debug for "
    "the traceback of a failure."
)


def describe(exc: BaseException) -> tuple[str, int]:
    """The one line (without the ``tickstream COMMAND: `` prefix) and the exit code."""
    from confluent_kafka import KafkaException

    from connectors.base.collector import CollectorConfigError
    from connectors.files import TickFileError
    from connectors.history.parse import HistoryError
    from connectors.kafka_tls import KafkaTlsError
    from stages.score import ModelError
    from storage.errors import StorageError
    from topology.preflight import PreflightError
    from topology.settings import SettingsError

    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(exc, SettingsError):
        return f"configuration error: {exc}", EXIT_USAGE
    if isinstance(exc, CollectorConfigError):
        return f"configuration error: {exc}", EXIT_USAGE
    if isinstance(exc, KafkaTlsError | TickFileError | HistoryError | PreflightError | ModelError):
        return str(exc), EXIT_FAILED
    if isinstance(exc, StorageError):  # e.g. process --store on a store that is not there
        return (f"store: {exc} (TICKSTREAM_STORE_URL or --store says where)"), EXIT_FAILED
    if isinstance(exc, KafkaException):
        err = exc.args[0] if exc.args else exc
        text = err.str() if hasattr(err, "str") else str(err)
        return (f"Kafka: {text} (is the broker running? make broker starts one; "
                "TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS sets where)"), EXIT_FAILED
    if isinstance(exc, UnicodeDecodeError):
        return (f"an input is not UTF-8 text ({exc.reason} at byte {exc.start}): is it "
                "the right file?"), EXIT_FAILED
    if isinstance(exc, OSError) and exc.filename is not None:
        why = exc.strerror or type(exc).__name__
        hint = {FileNotFoundError: "check the path", PermissionError: "check its permissions",
                IsADirectoryError: "give a file", FileExistsError: "remove it or pick another",
                }.get(type(exc), "")
        return f"{exc.filename}: {why}" + (f": {hint}" if hint else ""), EXIT_FAILED
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}", EXIT_FAILED
    return (f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback "
            "and report it)"), EXIT_FAILED


def report(command: str, exc: BaseException, *, debug: bool = False,
           stream: TextIO | None = None) -> int:
    """Print the failure of ``command`` and return its exit code."""
    out = stream or sys.stderr
    if isinstance(exc, BrokenPipeError):  # the reader of our output went away (| head)
        _silence_stdout()
        return EXIT_OK
    line, code = describe(exc)
    if debug and not isinstance(exc, KeyboardInterrupt):
        traceback.print_exception(exc, file=out)
    print(f"tickstream {command}: {line}", file=out, flush=True)
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
