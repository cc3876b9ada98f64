"""TLS in front of the local broker, for tests: a throwaway CA, a server certificate, stunnel.

Tansu's own TLS listener did not complete a handshake on these machines, so TLS is
terminated by ``stunnel`` (Debian's ``stunnel4``; ``make stunnel`` installs it) in front of a
broker that listens in plain text. Kafka clients connect to the *advertised* listener they
read from the metadata, not to the bootstrap address, so :class:`TlsBroker` starts its own
Tansu whose advertised listener is the stunnel port: every connection, bootstrap or not,
goes through TLS.

Certificates are made with the ``openssl`` command line (always present where stunnel is):
a CA, and a server certificate it signs for ``127.0.0.1`` (IP subject alternative name, so
clients that verify host names accept it).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from devstack.broker import BrokerError, free_port, tansu_binary, wait_for_port

__all__ = ["CertificateSet", "Stunnel", "TlsBroker", "make_ca", "make_certificates",
           "stunnel_binary"]


def _openssl(*args: str, cwd: Path) -> None:
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {out.stderr.strip()}")


def make_ca(directory: Path, name: str = "ca") -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key) as PEM files ``{name}.pem``, ``{name}.key``."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN=tickstream test {name}", "-keyout", str(key), "-out", str(cert),
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    return cert, key


@dataclass(frozen=True)
class CertificateSet:
    ca: Path  # the CA certificate clients trust
    server_cert: Path  # the server certificate (signed by ``ca``)
    server_key: Path
    other_ca: Path  # an unrelated CA: a client trusting only it must refuse the server


def make_certificates(directory: Path) -> CertificateSet:
    """A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA."""
    ca, ca_key = make_ca(directory, "ca")
    other, _ = make_ca(directory, "other-ca")
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", str(key), "-out", str(csr), cwd=directory)
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert),
             cwd=directory)
    return CertificateSet(ca=ca, server_cert=cert, server_key=key, other_ca=other)


def stunnel_binary() -> str | None:
    return shutil.which("stunnel4") or shutil.which("stunnel")


@dataclass
class Stunnel:
    """``stunnel`` accepting TLS on ``accept_port`` and forwarding plain TCP to ``connect_port``."""

    certs: CertificateSet
    connect_port: int
    directory: Path
    accept_port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self, timeout_s: float = 15.0) -> Stunnel:
        binary = stunnel_binary()
        if binary is None:
            raise BrokerError("stunnel is not installed (make stunnel)")
        if self.accept_port == 0:
            self.accept_port = free_port()
        conf = self.directory / "stunnel.conf"
        log = self.directory / "stunnel.log"
        conf.write_text(
            "foreground = yes\n"
            "pid =\n"
            f"output = {log}\n"
            "debug = notice\n"
            "[kafka]\n"
            f"accept = 127.0.0.1:{self.accept_port}\n"
            f"connect = 127.0.0.1:{self.connect_port}\n"
            f"cert = {self.certs.server_cert}\n"
            f"key = {self.certs.server_key}\n"
        )
        self.process = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for_port("127.0.0.1", self.accept_port, timeout_s)
        except BrokerError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@dataclass
class TlsBroker:
    """A Tansu broker listening in plain text on ``plain_port``, reachable only over TLS.

    Its advertised listener is the stunnel port, so clients that bootstrap over TLS are sent
    back to TLS for every broker connection.
    """

    directory: Path
    certs: CertificateSet
    plain_port: int = 0
    tls_port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    stunnel: Stunnel | None = field(default=None, init=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.tls_port}"

    def start(self, timeout_s: float = 15.0) -> TlsBroker:
        self.plain_port = self.plain_port or free_port()
        self.tls_port = self.tls_port or free_port()
        with open(self.directory / "tansu.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(tansu_binary()), "broker",
                 "--listener-url", f"tcp://127.0.0.1:{self.plain_port}",
                 "--advertised-listener-url", f"tcp://127.0.0.1:{self.tls_port}",
                 "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            wait_for_port("127.0.0.1", self.plain_port, timeout_s)
            self.stunnel = Stunnel(self.certs, self.plain_port, self.directory,
                                   self.tls_port).start(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.stunnel is not None:
            self.stunnel.stop()
            self.stunnel = None
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def __enter__(self) -> TlsBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
