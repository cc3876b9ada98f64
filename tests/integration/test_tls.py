"""TLS end to end: SSL settings through a TLS terminator (stunnel) in front of the broker.

The broker of this module is reachable only over TLS (``tests/fixtures/tls_helpers.TlsBroker``: its
advertised listener is the stunnel port). A tick goes in through the project's producer
path, a ``tickstream worker`` consumes it over TLS, and the clean tick comes back out; a CA
that did not sign the broker's certificate gives one clear line from the producer path,
``tickstream collect`` and the worker start-up (librdkafka alone logged ~20 handshake
failures a second and then raised "Broker transport failure", or a traceback).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import need
from tls_helpers import CertificateSet, TlsBroker, make_certificates, stunnel_binary

from connectors.kafka_tls import KafkaTlsError, check_broker_tls
from connectors.producer import RecordProducer
from devstack.broker import free_port
from devstack.kafka_io import TopicReader
from devstack.localstack import WorkerProcess
from schemas.codec import Codec
from schemas.records import CleanTick, RawTick
from topology.admin import ensure_topics
from topology.settings import Settings

pytestmark = pytest.mark.integration

CA_SETTING = "TICKSTREAM_KAFKA_SSL_CA_FILE"
NOTICE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|WARNING) ")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificateSet:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory, certs: CertificateSet
               ) -> Iterator[TlsBroker]:
    need(stunnel_binary() is not None, "stunnel is not installed (make stunnel)")
    with TlsBroker(tmp_path_factory.mktemp("tls-broker"), certs) as broker:
        yield broker


def tls_env(broker: TlsBroker, ca: Path, unique: str, tmp_path: Path) -> dict[str, str]:
    return {
        "TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "TICKSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
        CA_SETTING: str(ca),
        "TICKSTREAM_TOPIC_PREFIX": f"t{unique}.",
        "TICKSTREAM_APP_ID": f"app{unique}",
        "TICKSTREAM_PARTITIONS": "2",
        "TICKSTREAM_DATA_DIR": str(tmp_path / "worker"),
        "TICKSTREAM_TABLE_STORE": "memory://",
        "TICKSTREAM_WEB_PORT": str(free_port()),
    }


def tickstream(*args: str) -> list[str]:
    return [sys.executable, "-m", "topology.cli", *args]


def assert_one_clear_line(stderr: str, broker: TlsBroker, ca: Path) -> str:
    # INFO/WARNING records of unrelated modules (a stale native build, say) may come first
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not NOTICE.match(ln)]
    assert len(lines) == 1, stderr[-3000:]
    line = lines[0]
    assert "Traceback" not in stderr and "%3|" not in stderr
    assert f"TLS to the Kafka broker {broker.bootstrap} failed" in line, line
    assert "not trusted" in line and f"{CA_SETTING}={ca}" in line, line
    assert f"set {CA_SETTING} to the CA bundle that signed the broker's certificate" in line
    return line


def test_a_tick_goes_through_the_worker_over_tls(
    tls_broker: TlsBroker, certs: CertificateSet, unique: str, tmp_path: Path
) -> None:
    env = tls_env(tls_broker, certs.ca, unique, tmp_path)
    settings = Settings.from_env(env, env_file=None)
    assert settings.confluent_config()["security.protocol"] == "SSL"
    check_broker_tls(settings)  # the right CA passes
    ensure_topics(settings)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.start(ready_timeout_s=90)
        producer = RecordProducer(settings)
        now_ms = int(time.time() * 1000)
        sent = RawTick(broker="TLS", symbol="EURUSD", bid=1.1, ask=1.1002, time_msc=now_ms,
                       recv_time_us=time.time_ns() // 1000, source="SIMULATOR")
        producer.send("ticks.raw", "EURUSD", sent)
        assert producer.flush() == 0
        clean_topic = settings.topic("ticks.clean")
        with TopicReader(settings, [clean_topic]) as reader:
            got = reader.read_until(lambda ms: len(ms) >= 1, 60)
        assert len(got) == 1, worker.log_text()[-3000:]
        clean = Codec().decode(got[0].value, CleanTick, clean_topic)
        assert (clean.broker, clean.symbol, clean.time_msc) == ("TLS", "EURUSD", now_ms)
        assert (clean.bid, clean.ask) == (sent.bid, sent.ask)
        assert clean.best_bid_broker == "TLS" and clean.fresh_brokers == 1
    finally:
        worker.stop()
    log = (tls_broker.directory / "stunnel.log").read_text(errors="replace")
    assert "accepted connection" in log  # every client went through the TLS terminator


def test_wrong_ca_is_one_clear_error_from_the_producer_path(
    tls_broker: TlsBroker, certs: CertificateSet, unique: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(tls_env(tls_broker, certs.other_ca, unique, tmp_path),
                                 env_file=None)
    with pytest.raises(KafkaTlsError) as err:
        RecordProducer(settings)
    message = str(err.value)
    assert "\n" not in message and f"{CA_SETTING}={certs.other_ca}" in message
    assert "certificate" in message and "not trusted" in message


def test_wrong_ca_is_one_clear_line_from_collect(
    tls_broker: TlsBroker, certs: CertificateSet, unique: str, tmp_path: Path
) -> None:
    config = tmp_path / "simulate.yaml"
    config.write_text(yaml.safe_dump({"name": f"sim-{unique}", "symbols": ["EURUSD"]}))
    env = {**os.environ, **tls_env(tls_broker, certs.other_ca, unique, tmp_path)}
    out = subprocess.run(tickstream("collect", "simulate", "--config", str(config)),
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1, out.stderr[-3000:]
    line = assert_one_clear_line(out.stderr, tls_broker, certs.other_ca)
    assert line.startswith("tickstream collect simulate: "), line


def test_wrong_ca_is_one_clear_line_from_the_worker_start_up(
    tls_broker: TlsBroker, certs: CertificateSet, unique: str, tmp_path: Path
) -> None:
    env = {**os.environ, **tls_env(tls_broker, certs.other_ca, unique, tmp_path)}
    out = subprocess.run(tickstream("worker"), capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 1, out.stderr[-3000:]
    line = assert_one_clear_line(out.stderr, tls_broker, certs.other_ca)
    assert line.startswith("tickstream worker: "), line


def test_a_listener_that_does_not_speak_tls_is_named(unique: str, tmp_path: Path) -> None:
    """SSL settings pointed at something that answers in plain text: check the protocol."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        settings = Settings.from_env({
            "TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "TICKSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
        }, env_file=None)
        with pytest.raises(KafkaTlsError) as err:
            check_broker_tls(settings, timeout_s=30)
        thread.join(30)
    message = str(err.value)
    assert message.startswith(f"TLS to the Kafka broker 127.0.0.1:{port} failed (")
    assert "is a TLS listener, or set TICKSTREAM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT" in message


def test_an_unusable_ca_file_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    settings = Settings.from_env({"TICKSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
                                  CA_SETTING: str(bogus)}, env_file=None)
    with pytest.raises(KafkaTlsError, match=f"{CA_SETTING}={bogus} is not a usable CA bundle"):
        check_broker_tls(settings)


def test_plaintext_is_not_checked() -> None:
    settings = Settings.from_env({"TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"},
                                 env_file=None)
    check_broker_tls(settings)  # no connection attempted, nothing raised
