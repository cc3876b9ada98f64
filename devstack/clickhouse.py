"""A private ``clickhouse-server`` for tests and local runs: 127.0.0.1, a free port, its own
config and data directory, never the system service's (``make clickhouse`` installs Debian's
package, 18.16; see ``../shared/NOTES.md``).

:meth:`ClickHouseServer.start` writes a minimal config (native TCP port only, no HTTP, no
interserver port, no ``::1`` listener) into ``root``, starts the binary and waits until a
``SELECT 1`` answers. :meth:`stop` ends it gracefully, :meth:`kill` abruptly (the outage
test); :meth:`start` again reuses the same port and data, as a restarted server would.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.broker import free_port


class ClickHouseError(RuntimeError):
    """The server binary is missing or the server did not become ready."""


_CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{root}/log/server.log</log>
    <errorlog>{root}/log/server.err.log</errorlog><console>0</console></logger>
  <tcp_port>{port}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{root}/data/</path>
  <tmp_path>{root}/tmp/</tmp_path>
  <user_files_path>{root}/user_files/</user_files_path>
  <format_schema_path>{root}/format_schemas/</format_schema_path>
  <users_config>{root}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>64</max_concurrent_queries>
</yandex>
"""
_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
"""


def server_binary() -> Path:
    for name in ("clickhouse-server", "clickhouse"):
        found = shutil.which(name) or (
            f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
        )
        if found:
            return Path(found)
    raise ClickHouseError("clickhouse-server is not installed: run `make clickhouse`")


@dataclass
class ClickHouseServer:
    root: Path | None = None
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _own_root: bool = field(default=False, init=False)

    @property
    def url(self) -> str:
        return f"clickhouse://default@127.0.0.1:{self.port}/default"

    def store_url(self, database: str) -> str:
        return f"clickhouse://default@127.0.0.1:{self.port}/{database}"

    def start(self, timeout_s: float = 30.0) -> ClickHouseServer:
        binary = server_binary()
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="tickstream-clickhouse-"))
            self._own_root = True
        if self.port == 0:
            self.port = free_port()
        for sub in ("data", "tmp", "user_files", "format_schemas", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "config.xml").write_text(_CONFIG.format(root=self.root, port=self.port))
        (self.root / "users.xml").write_text(_USERS)
        args = [str(binary)]
        if binary.name == "clickhouse":
            args.append("server")
        args.append(f"--config-file={self.root / 'config.xml'}")
        with open(self.root / "log" / "stdout.log", "ab") as out:
            self.process = subprocess.Popen(
                args, cwd=self.root, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.wait_ready(timeout_s)
        except ClickHouseError:
            self.kill()
            raise
        return self

    def wait_ready(self, timeout_s: float) -> None:
        from clickhouse_driver import Client

        # Refused connections are what waiting for a starting server means: clickhouse_driver
        # logs each one as a WARNING with its traceback (a page per attempt in the bench's
        # output); the last error is in the message below when it never becomes ready.
        quiet = logging.getLogger("clickhouse_driver.connection")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            self._poll_ready(Client, timeout_s)
        finally:
            quiet.setLevel(level)

    def _poll_ready(self, Client: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ClickHouseError(
                    f"clickhouse-server exited with code {self.process.returncode}; "
                    f"see {self.root}/log"
                )
            client = Client("127.0.0.1", port=self.port, connect_timeout=1,
                            send_receive_timeout=5)
            try:
                client.execute("SELECT 1")
                return
            except Exception as exc:  # not listening yet
                last = exc
                time.sleep(0.05)
            finally:
                client.disconnect()
        raise ClickHouseError(
            f"clickhouse-server on 127.0.0.1:{self.port} not ready in {timeout_s}s: {last}"
        )

    def stop(self, timeout_s: float = 15.0) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after ``timeout_s``); data stays in root."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)

    def kill(self) -> None:
        """Abrupt stop (SIGKILL): what an outage looks like to a client."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def cleanup(self) -> None:
        """Stop and remove the directory if this object created it."""
        self.stop()
        if self._own_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ClickHouseServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
