"""``tickstream control``: the operator's switches, published on the ``control`` topic.

``tickstream control kill-switch on|off [--reason TEXT]`` and ``tickstream control model
VERSION [--path DIR]`` each send one :class:`~schemas.records.ControlMessage` in the form
:mod:`agents.control` consumes (``kill_switch_on`` / ``kill_switch_off`` keyed
``kill_switch``; ``model_announce`` keyed ``model``: the topic is compacted, so the last
switch and the last announcement survive), and wait until the broker has it. The worker
that consumes ``control`` writes it to the ``control_state`` global table; every worker's
``/health/`` then shows ``kill_switch`` (on, reason, issued_by, time_ms) and the model in use.

Registered by :func:`topology.cli.build_parser` through :func:`add_parser`. A broker that
does not take the message within ``--timeout`` seconds is a ``KafkaException`` (one line
and exit 1 from ``tickstream``'s error handling).
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
import time
from typing import Any

from schemas.records import ControlMessage
from stages.score import valid_version

KEYS = {"kill_switch_on": "kill_switch", "kill_switch_off": "kill_switch",
        "model_announce": "model"}
DEFAULT_TIMEOUT_S = 10.0


def _version(text: str) -> str:
    if not valid_version(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a model version (letters, digits, '.', '_', '-'; as in "
            "model-<version>.json)")
    return text


def _timeout(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        x = -1.0
    if not 0.0 < x <= 600.0:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 600], got {text!r}")
    return x


def default_issuer() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def message(args: argparse.Namespace, now_ms: int | None = None) -> ControlMessage:
    """The control message the parsed command line asks for."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if args.control == "kill-switch":
        on = args.state == "on"
        return ControlMessage(
            command="kill_switch_on" if on else "kill_switch_off",
            reason=args.reason or ("set" if on else "lifted") + " with tickstream control",
            issued_by=args.issued_by or default_issuer(), time_ms=now_ms)
    return ControlMessage(
        command="model_announce", reason=args.reason or "announced with tickstream control",
        issued_by=args.issued_by or default_issuer(), time_ms=now_ms,
        model_version=args.version, model_path=args.path)


def publish(settings: Any, msg: ControlMessage, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Send ``msg`` to ``control`` and wait for the broker's acknowledgement."""
    from confluent_kafka import KafkaError, KafkaException

    from connectors.producer import RecordProducer

    errors: list[Any] = []
    producer = RecordProducer(settings)
    producer.send("control", KEYS[msg.command], msg,
                  on_delivery=lambda err, _m: errors.append(err) if err is not None else None)
    left = producer.flush(timeout_s)
    if errors:
        raise KafkaException(errors[0])
    if left:
        raise KafkaException(KafkaError(
            KafkaError._MSG_TIMED_OUT,
            f"the control message was not acknowledged within {timeout_s:g} s"))


def cmd_control(args: argparse.Namespace) -> int:
    from topology.cli import _settings

    settings = _settings()
    msg = message(args)
    publish(settings, msg, args.timeout)
    if args.json:
        print(json.dumps({"topic": settings.topic("control"), **msg.to_dict()},
                         sort_keys=True))
    elif msg.command == "model_announce":
        print(f"model {msg.model_version} announced on {settings.topic('control')}: workers "
              "load it for their next bar (an unloadable version keeps the current model; "
              "/health/ shows the model in use)")
    elif msg.command == "kill_switch_on":
        print(f"kill switch ON sent to {settings.topic('control')} ({msg.reason}): workers "
              "make no new command, CLOSE included, until `tickstream control kill-switch "
              "off`; /health/ shows kill_switch.on")
    else:
        print(f"kill switch lifted on {settings.topic('control')} ({msg.reason}): commands "
              "resume from the next bar or tick")
    return 0


def add_parser(sub: Any) -> None:
    """Add ``control`` to the ``tickstream`` subcommands (an ``add_subparsers()`` result)."""
    p = sub.add_parser(
        "control", help="set or lift the kill switch, announce a model version",
        description="Publish an operator instruction on the control topic. Every worker "
        "follows it within a batch and keeps it across restarts (a global table); "
        "GET /health/ on a worker shows the kill switch and the model in use.",
    )
    csub = p.add_subparsers(dest="control", required=True, metavar="{kill-switch,model}")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--reason", metavar="TEXT",
                       help="why (shown in /health/ and the workers' log)")
        q.add_argument("--issued-by", metavar="NAME",
                       help="who (default: user@host of this machine)")
        q.add_argument("--timeout", type=_timeout, default=DEFAULT_TIMEOUT_S, metavar="S",
                       help=f"seconds to wait for the broker (default {DEFAULT_TIMEOUT_S:g})")
        q.add_argument("--json", action="store_true",
                       help="print the message sent as one JSON line")
        q.set_defaults(func=cmd_control)

    k = csub.add_parser(
        "kill-switch", help="stop (on) or resume (off) every new trading command",
        description="on: workers make no new command of any kind (CLOSE included; open "
        "positions keep the broker-side stops sent with their entry) until it is lifted; "
        "off: the rules apply again from the next bar or tick.")
    k.add_argument("state", choices=("on", "off"), help="on: stop commands; off: resume")
    common(k)
    m = csub.add_parser(
        "model", help="make the workers score with model VERSION",
        description="Workers load model-VERSION from their TICKSTREAM_MODEL_DIR (or --path) "
        "and use it from the next bar; a version that does not load leaves the current "
        "model in use (logged). A CURRENT file in the model directory still wins.")
    m.add_argument("version", type=_version, metavar="VERSION", help="the model version")
    m.add_argument("--path", metavar="DIR",
                   help="directory holding the version, as the workers see it "
                   "(default: their TICKSTREAM_MODEL_DIR)")
    common(m)


def main(argv: list[str] | None = None) -> int:
    """``python -m topology.control_cli kill-switch on``: the same command without the rest of
    ``tickstream`` (for a machine or test that only needs the switch)."""
    parser = argparse.ArgumentParser(prog="tickstream")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["control", *(argv if argv is not None else sys.argv[1:])])
    try:
        return int(args.func(args))
    except Exception as exc:  # one line, as tickstream's own error handling prints it
        from confluent_kafka import KafkaException

        from topology.settings import SettingsError

        if not isinstance(exc, KafkaException | SettingsError):
            raise
        err = exc.args[0] if exc.args else exc
        text = err.str() if hasattr(err, "str") else str(err)
        print(f"tickstream control: {text}", file=sys.stderr)
        return 2 if isinstance(exc, SettingsError) else 1


if __name__ == "__main__":
    raise SystemExit(main())
