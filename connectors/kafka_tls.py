"""A TLS check of the Kafka bootstrap servers before any Kafka client is made.

With a CA that did not sign the broker's certificate, librdkafka logs a handshake failure
on every reconnect (about 20 lines a second) and a client call finally fails with
"Broker transport failure", which names neither TLS nor the setting to change; Faust's
client retries the same way. :func:`check_broker_tls` does one handshake with the
configured CA (the same ``ssl`` verification Faust uses, and librdkafka's: CA file or the
system store, host name checked) and raises :class:`KafkaTlsError` whose message is one
line saying what is wrong and what to set. A server that cannot be reached is not judged
here: the clients report it and retry as usual.
"""

from __future__ import annotations

import socket
import ssl

from connectors.kafka_client import KafkaClientSettings as Settings

__all__ = ["CA_FILE_SETTING", "KafkaTlsError", "check_broker_tls"]

CA_FILE_SETTING = "TICKSTREAM_KAFKA_SSL_CA_FILE"


class KafkaTlsError(RuntimeError):
    """TLS to the Kafka broker cannot work with these settings; the message says why."""


def _context(settings: Settings) -> ssl.SSLContext:
    ca = settings.security.ssl_ca_file
    try:
        return ssl.create_default_context(cafile=str(ca) if ca else None)
    except (ssl.SSLError, OSError) as exc:
        raise KafkaTlsError(
            f"{CA_FILE_SETTING}={ca} is not a usable CA bundle ({exc}): point it at the PEM "
            "file of the CA that signed the broker's certificate"
        ) from None


def check_broker_tls(settings: Settings, timeout_s: float = 5.0) -> None:
    """Raise :class:`KafkaTlsError` when TLS to the first reachable bootstrap server fails.

    Does nothing for ``PLAINTEXT``, and nothing when no bootstrap server accepts a TCP
    connection within ``timeout_s``.
    """
    if settings.security.protocol == "PLAINTEXT":
        return
    context = _context(settings)
    ca = settings.security.ssl_ca_file
    for server in settings.kafka_bootstrap_servers:
        host, _, port = server.rpartition(":")
        host = host.strip("[]")
        try:
            sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        except (OSError, ValueError):
            continue  # not reachable (yet): the Kafka client reports it and retries
        with sock:
            try:
                with context.wrap_socket(sock, server_hostname=host):
                    return
            except ssl.SSLCertVerificationError as exc:
                trusted = (f"the CA in {CA_FILE_SETTING}={ca}" if ca
                           else f"the system CA store ({CA_FILE_SETTING} is not set)")
                raise KafkaTlsError(
                    f"TLS to the Kafka broker {server} failed: its certificate is not "
                    f"trusted by {trusted} ({exc.verify_message}); set {CA_FILE_SETTING} to "
                    "the CA bundle that signed the broker's certificate"
                ) from None
            except ssl.SSLError as exc:
                raise KafkaTlsError(
                    f"TLS to the Kafka broker {server} failed ({exc.reason or exc}): check "
                    f"that {server} is a TLS listener, or set "
                    "TICKSTREAM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT if it is not"
                ) from None
            except OSError:
                continue  # reset or timed out mid-handshake: no verdict on the certificate
