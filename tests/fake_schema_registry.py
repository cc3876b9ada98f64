"""In-process stand-in for the Confluent Schema Registry REST API, for tests.

Implements the subset tickstream uses, with the real registry's semantics and error bodies:

* ``POST /subjects/{subject}/versions`` ``{"schema": "..."}`` -> ``{"id": N}``. Ids are global:
  the same schema (compared after JSON normalisation) gets the same id under any subject, and
  registering it again under the same subject does not create a new version.
  Unparseable schema -> 422 ``{"error_code": 42201, ...}``.
* ``GET /schemas/ids/{id}`` -> ``{"schema": "..."}``; unknown -> 404 ``{"error_code": 40403,
  "message": "Schema not found"}``.
* ``GET /subjects`` -> list of subjects; ``GET /subjects/{subject}/versions`` -> list of versions
  (unknown subject -> 404 / 40401).
* Optional HTTP basic auth: wrong or missing credentials -> 401 ``{"error_code": 401, ...}``.

Served by :class:`http.server.ThreadingHTTPServer` on 127.0.0.1 with an ephemeral port. Use it as
a context manager; leaving it shuts the server down, closes the socket and joins every thread.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class _State:
    """Registry contents, shared by all handler threads (guarded by ``lock``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids_by_schema: dict[str, int] = {}
        self.schemas_by_id: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}  # subject -> schema id per version (1-based)
        self.requests: list[tuple[str, str]] = []  # (method, path) log for assertions
        self.auth_headers: list[str | None] = []

    def register(self, subject: str, schema_str: str) -> int:
        normalised = json.dumps(json.loads(schema_str), sort_keys=True, separators=(",", ":"))
        with self.lock:
            schema_id = self.ids_by_schema.get(normalised)
            if schema_id is None:
                schema_id = len(self.schemas_by_id) + 1
                self.ids_by_schema[normalised] = schema_id
                self.schemas_by_id[schema_id] = schema_str
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id


class _Server(ThreadingHTTPServer):
    # join request threads on server_close() so nothing outlives the context manager
    daemon_threads = False
    block_on_close = True

    def __init__(self, state: _State, credentials: tuple[str, str] | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.expected_auth: str | None = None
        if credentials is not None:
            token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            self.expected_auth = f"Basic {token}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after a test

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        return

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: int, message: str) -> None:
        self._send(status, {"error_code": code, "message": message})

    def _authorised(self) -> bool:
        state = self.server.state
        header = self.headers.get("Authorization")
        with state.lock:
            state.requests.append((self.command, self.path))
            state.auth_headers.append(header)
        expected = self.server.expected_auth
        if expected is not None and header != expected:
            self._error(HTTPStatus.UNAUTHORIZED, 401, "Unauthorized")
            return False
        return True

    def _parts(self) -> list[str]:
        path = urllib.parse.urlsplit(self.path).path
        return [urllib.parse.unquote(p) for p in path.strip("/").split("/") if p]

    def do_GET(self) -> None:
        if not self._authorised():
            return
        parts = self._parts()
        state = self.server.state
        if len(parts) == 3 and parts[:2] == ["schemas", "ids"]:
            try:
                schema_id = int(parts[2])
            except ValueError:
                self._error(HTTPStatus.NOT_FOUND, 40403, "Schema not found")
                return
            with state.lock:
                schema_str = state.schemas_by_id.get(schema_id)
            if schema_str is None:
                self._error(HTTPStatus.NOT_FOUND, 40403, "Schema not found")
            else:
                self._send(HTTPStatus.OK, {"schema": schema_str})
        elif parts == ["subjects"]:
            with state.lock:
                subjects = sorted(state.subjects)
            self._send(HTTPStatus.OK, subjects)
        elif len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
            with state.lock:
                versions = state.subjects.get(parts[1])
                numbers = list(range(1, len(versions) + 1)) if versions is not None else None
            if numbers is None:
                self._error(HTTPStatus.NOT_FOUND, 40401, f"Subject '{parts[1]}' not found.")
            else:
                self._send(HTTPStatus.OK, numbers)
        else:
            self._error(HTTPStatus.NOT_FOUND, 404, "HTTP 404 Not Found")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not self._authorised():
            return
        parts = self._parts()
        if not (len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions"):
            self._error(HTTPStatus.NOT_FOUND, 404, "HTTP 404 Not Found")
            return
        try:
            body = json.loads(raw)
            schema_str = body["schema"]
            if not isinstance(schema_str, str):
                raise TypeError("schema must be a string")
            schema_id = self.server.state.register(parts[1], schema_str)
        except (ValueError, KeyError, TypeError) as exc:
            self._error(HTTPStatus.UNPROCESSABLE_ENTITY, 42201, f"Invalid schema: {exc}")
            return
        self._send(HTTPStatus.OK, {"id": schema_id})


class FakeSchemaRegistry:
    """Context manager running the fake registry; ``url`` is its base URL while running."""

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self._state = _State()
        self._credentials = credentials
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("fake schema registry is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[tuple[str, str]]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def auth_headers(self) -> list[str | None]:
        with self._state.lock:
            return list(self._state.auth_headers)

    def register(self, subject: str, schema_str: str) -> int:
        """Register directly (bypassing HTTP), e.g. to plant a schema written by someone else."""
        return self._state.register(subject, schema_str)

    def __enter__(self) -> FakeSchemaRegistry:
        self._server = _Server(self._state, self._credentials)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-schema-registry",
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()  # stops serve_forever
            server.server_close()  # closes the socket and joins request threads
        if thread is not None:
            thread.join()
