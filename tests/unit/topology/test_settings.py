from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from topology.settings import Secret, Settings, SettingsError

PASSWORD = "s3cr3t-PASSW0RD-do-not-log"


def env(**kv: str) -> dict[str, str]:
    return {f"TICKSTREAM_{k}": v for k, v in kv.items()}


def test_defaults() -> None:
    s = Settings.from_env({}, env_file=None)
    assert s.kafka_bootstrap_servers == ("127.0.0.1:9092",)
    assert s.partitions == 12
    assert s.security.protocol == "PLAINTEXT"
    assert s.clickhouse_url.scheme == "chdb"
    assert s.symbols["USDJPY"].pip_size == 0.01
    assert s.symbols["EURUSD"].pip_size == 0.0001
    assert s.schema_registry_url is None
    assert (s.dedupe_window_ms, s.broker_staleness_ms, s.broker_priorities) == (600_000, 5_000, {})


def test_good_values() -> None:
    s = Settings.from_env(
        env(
            KAFKA_BOOTSTRAP_SERVERS="k1:9092, k2:19092",
            PARTITIONS="6",
            REPLICATION_FACTOR="3",
            TOPIC_PREFIX="prod.",
            SYMBOLS="eurusd,USDJPY:0.01:4,XAUUSD:0.1",
            CLICKHOUSE_URL="clickhouse://ts:pw@ch.example:9440/market",
            RISK_LOT_SIZE="0.5",
            VALIDATION_LEVEL="Enterprise",
            DEDUPE_WINDOW_MS="120000",
            BROKER_STALENESS_MS="2500",
            BAR_IDLE_FLUSH_MS="0",
            STREAM_BUFFER_MAXSIZE="8192",
            GC_GEN0_THRESHOLD="20000",
            BROKER_PRIORITIES=" ICM=1, PEP = 0 ,FXCM=7",
        ),
        env_file=None,
    )
    assert s.kafka_bootstrap_servers == ("k1:9092", "k2:19092")
    assert (s.partitions, s.replication_factor) == (6, 3)
    assert s.topic("ticks.raw") == "prod.ticks.raw"
    assert list(s.symbols) == ["EURUSD", "USDJPY", "XAUUSD"]
    assert s.symbols["USDJPY"].max_spread_pips == 4.0
    assert s.symbols["XAUUSD"].pip_size == 0.1
    ch = s.clickhouse_url
    assert (ch.scheme, ch.host, ch.port, ch.user, ch.database) == (
        "clickhouse", "ch.example", 9440, "ts", "market"
    )
    assert ch.password == Secret("pw")
    assert s.risk.lot_size == 0.5
    assert s.validation_level == "enterprise"
    assert (s.dedupe_window_ms, s.broker_staleness_ms) == (120_000, 2_500)
    assert s.bar_idle_flush_ms == 0
    assert s.stream_buffer_maxsize == 8192
    assert s.gc_gen0_threshold == 20_000
    assert s.broker_priorities == {"ICM": 1, "PEP": 0, "FXCM": 7}


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("KAFKA_BOOTSTRAP_SERVERS", "localhost"),
        ("KAFKA_BOOTSTRAP_SERVERS", "host:99999"),
        ("PARTITIONS", "zero"),
        ("PARTITIONS", "0"),
        ("REPLICATION_FACTOR", "-1"),
        ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
        ("CLICKHOUSE_URL", "postgres://x"),
        ("CLICKHOUSE_URL", "chdb://"),
        ("SYMBOLS", "EUR-USD"),
        ("SYMBOLS", "EURUSD:abc"),
        ("RISK_ENTRY_THRESHOLD", "1.5"),
        ("RISK_LOT_SIZE", "nan"),
        ("SCHEMA_REGISTRY_URL", "registry:8081"),
        ("TABLE_STORE", "redis://"),
        ("TOPIC_PREFIX", "bad prefix"),
        ("VALIDATION_LEVEL", "paranoid"),
        ("DEDUPE_WINDOW_MS", "-1"),
        ("BROKER_STALENESS_MS", "5s"),
        ("BAR_IDLE_FLUSH_MS", "-5"),
        ("STREAM_BUFFER_MAXSIZE", "10"),
        ("GC_GEN0_THRESHOLD", "0"),
        ("GC_GEN0_THRESHOLD", "lots"),
        ("BROKER_PRIORITIES", "ICM"),
        ("BROKER_PRIORITIES", "ICM=-1"),
        ("BROKER_PRIORITIES", "ICM=1,ICM=2"),
        ("BROKER_PRIORITIES", "=3"),
    ],
)
def test_bad_value_names_the_variable(var: str, value: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env(**{var: value}), env_file=None)
    assert err.value.variable.startswith(f"TICKSTREAM_{var}")
    assert f"TICKSTREAM_{var}" in str(err.value)
    assert "expected" in str(err.value)


def test_sasl_ssl_requires_credentials() -> None:
    with pytest.raises(SettingsError, match="TICKSTREAM_KAFKA_SASL_MECHANISM"):
        Settings.from_env(env(KAFKA_SECURITY_PROTOCOL="SASL_SSL"), env_file=None)
    with pytest.raises(SettingsError, match="TICKSTREAM_KAFKA_SASL_PASSWORD"):
        Settings.from_env(
            env(KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
                KAFKA_SASL_USERNAME="u"),
            env_file=None,
        )


def test_security_reaches_confluent_config(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    pw_file = tmp_path / "pw"
    pw_file.write_text(PASSWORD + "\n")
    s = Settings.from_env(
        env(KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
            KAFKA_SASL_USERNAME="svc", KAFKA_SASL_PASSWORD_FILE=str(pw_file),
            KAFKA_SSL_CA_FILE=str(ca)),
        env_file=None,
    )
    conf = s.confluent_config()
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-256"
    assert conf["sasl.username"] == "svc"
    assert conf["sasl.password"] == PASSWORD
    assert conf["ssl.ca.location"] == str(ca)


def test_missing_ca_file_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="TICKSTREAM_KAFKA_SSL_CA_FILE"):
        Settings.from_env(
            env(KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CA_FILE=str(tmp_path / "nope.pem")),
            env_file=None,
        )


def test_secrets_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    s = Settings.from_env(
        env(KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_MECHANISM="PLAIN",
            KAFKA_SASL_USERNAME="svc", KAFKA_SASL_PASSWORD=PASSWORD,
            CLICKHOUSE_URL=f"clickhouse://ts:{PASSWORD}@ch:9000/db",
            SCHEMA_REGISTRY_URL=f"https://reg:{PASSWORD}@registry:8081"),
        env_file=None,
    )
    log = logging.getLogger("tickstream.test")
    with caplog.at_level(logging.DEBUG):
        log.info("settings %s", s)
        log.info("settings %r", s)
        log.info("redacted %s", s.redacted())
        log.info("security %s / %s", s.security, f"{s.security.sasl_password}")
        log.info("clickhouse %s", s.clickhouse_url)
    assert caplog.text  # something was logged
    assert PASSWORD not in caplog.text
    assert "svc" in caplog.text  # the user name is not secret and stays visible


def test_bad_clickhouse_url_error_does_not_echo_password() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env(CLICKHOUSE_URL=f"clickhouse://u:{PASSWORD}@:notaport/db"),
                          env_file=None)
    assert PASSWORD not in str(err.value)


def test_secret_is_not_picklable_or_printable() -> None:
    import pickle

    secret = Secret(PASSWORD)
    assert PASSWORD not in repr(secret) and PASSWORD not in str(secret)
    assert PASSWORD not in f"{secret}"
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_settings_are_frozen() -> None:
    s = Settings.from_env({}, env_file=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.partitions = 3  # type: ignore[misc]


def test_env_file_and_precedence(tmp_path: Path) -> None:
    f = tmp_path / ".env"
    f.write_text("# comment\nTICKSTREAM_PARTITIONS=3\nexport TICKSTREAM_TOPIC_PREFIX='dev.'\n")
    s = Settings.from_env({}, env_file=f)
    assert (s.partitions, s.topic_prefix) == (3, "dev.")
    s = Settings.from_env(env(PARTITIONS="5"), env_file=f)
    assert s.partitions == 5  # the real environment wins over the file
    f.write_text("garbage line\n")
    with pytest.raises(SettingsError):
        Settings.from_env({}, env_file=f)


def test_a_misspelt_setting_is_an_error_naming_the_one_meant() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"TICKSTREAM_PARTITON": "3"}, env_file=None)
    assert str(err.value) == ("unknown setting TICKSTREAM_PARTITON — did you mean "
                              "TICKSTREAM_PARTITIONS?")
    with pytest.raises(SettingsError, match="did you mean TICKSTREAM_KAFKA_SASL_PASSWORD_FILE"):
        Settings.from_env({"TICKSTREAM_KAFKA_SASL_PASWORD_FILE": "/x"}, env_file=None)


def test_an_unknown_setting_far_from_any_is_a_warning(caplog: pytest.LogCaptureFixture,
                                                      tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret\n")
    with caplog.at_level("WARNING", logger="topology.settings"):
        Settings.from_env({"TICKSTREAM_SOMETHING_ELSE": "1", "TICKSTREAM_STAGES_SOURCE": "1",
                           "TICKSTREAM_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "pw")},
                          env_file=None)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "unknown setting TICKSTREAM_SOMETHING_ELSE"]


def test_a_misspelt_setting_in_the_env_file_is_reported_too(tmp_path: Path) -> None:
    f = tmp_path / ".env"
    f.write_text("TICKSTREAM_WEB_PROT=6067\n")
    with pytest.raises(SettingsError, match="did you mean TICKSTREAM_WEB_PORT"):
        Settings.from_env({}, env_file=f)
