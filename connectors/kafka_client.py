"""What a Kafka client of ours needs to know, and the reader configuration tools share.

:class:`KafkaClientSettings` is the slice of ``topology.settings.Settings`` the producer
path, the TLS check and the readers use; connectors depend on it, not on the settings
module (which sits above them).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from connectors.base.secrets import Secret
from connectors.kafka_log import with_client_logging

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_ca_file: Path | None = None


class KafkaClientSettings(Protocol):
    """Resolved client settings (``topology.settings.Settings`` provides them)."""

    @property
    def kafka_bootstrap_servers(self) -> tuple[str, ...]: ...
    @property
    def security(self) -> KafkaSecurity: ...
    @property
    def producer_linger_ms(self) -> int: ...
    @property
    def schema_registry_url(self) -> Secret | None: ...

    def topic(self, name: str) -> str:
        """The physical name of the logical topic ``name`` (prefix applied)."""
        ...

    def confluent_config(self) -> dict[str, Any]:
        """librdkafka settings: bootstrap servers and security."""
        ...


def consumer_config(settings: KafkaClientSettings, **overrides: Any) -> dict[str, Any]:
    """A reader's librdkafka settings: a throwaway group, nothing committed, short waits."""
    conf = {
        **settings.confluent_config(),
        "group.id": f"tickstream-reader-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "fetch.wait.max.ms": 10,
        "fetch.queue.backoff.ms": 10,
    }
    conf.update(overrides)
    return with_client_logging(conf)  # librdkafka's log through Python logging


__all__ = ["KafkaClientSettings", "KafkaSecurity", "SaslMechanism", "SecurityProtocol",
           "consumer_config"]
