"""The minimal Schema Registry client against the in-process fake registry."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from fake_schema_registry import FakeSchemaRegistry

from schemas import avro
from schemas.registry import SchemaRegistryClient, SchemaRegistryError

PASSWORD = "s3cr3t-p@ss/word"


def test_register_is_idempotent_and_ids_are_global() -> None:
    with FakeSchemaRegistry() as fake:
        client = SchemaRegistryClient(fake.url)
        tick = avro.schema_json("RawTick")
        bar = avro.schema_json("Bar")
        first = client.register("ticks.raw-value", tick)
        assert client.register("ticks.raw-value", tick) == first
        # same schema under another subject: same global id (as the real registry does)
        assert client.register("ticks.replay-value", tick) == first
        other = client.register("bars.1m-value", bar)
        assert other != first
        assert json.loads(client.get_schema(first)) == json.loads(tick)
        assert json.loads(client.get_schema(other)) == json.loads(bar)
        assert client.subjects() == ["bars.1m-value", "ticks.raw-value", "ticks.replay-value"]
        # requests really went over HTTP with the documented paths
        assert ("POST", "/subjects/ticks.raw-value/versions") in fake.requests
        assert ("GET", f"/schemas/ids/{first}") in fake.requests


def test_subject_is_url_quoted() -> None:
    with FakeSchemaRegistry() as fake:
        client = SchemaRegistryClient(fake.url + "/")
        schema_id = client.register("odd/subject name-value", avro.schema_json("Bar"))
        assert client.subjects() == ["odd/subject name-value"]
        assert ("POST", "/subjects/odd%2Fsubject%20name-value/versions") in fake.requests
        assert schema_id == 1


def test_unknown_id_raises_40403() -> None:
    with FakeSchemaRegistry() as fake:
        client = SchemaRegistryClient(fake.url)
        with pytest.raises(SchemaRegistryError) as info:
            client.get_schema(4242)
        assert info.value.error_code == 40403
        assert info.value.status == 404
        assert info.value.not_found
        assert "Schema not found" in str(info.value)


def test_invalid_schema_raises_42201() -> None:
    with FakeSchemaRegistry() as fake:
        client = SchemaRegistryClient(fake.url)
        with pytest.raises(SchemaRegistryError) as info:
            client.register("x-value", "{not json")
        assert info.value.error_code == 42201
        assert not info.value.not_found


def test_basic_auth_from_url_is_sent() -> None:
    with FakeSchemaRegistry(credentials=("svc-user", PASSWORD)) as fake:
        quoted = "s3cr3t-p%40ss%2Fword"
        url = fake.url.replace("http://", f"http://svc-user:{quoted}@")
        client = SchemaRegistryClient(url)
        schema_id = client.register("ticks.raw-value", avro.schema_json("RawTick"))
        assert json.loads(client.get_schema(schema_id))["name"] == "RawTick"
        assert all(h is not None and h.startswith("Basic ") for h in fake.auth_headers)
        assert client.url == fake.url
        assert PASSWORD not in repr(client) and quoted not in repr(client)


def test_password_never_in_error_messages() -> None:
    with FakeSchemaRegistry(credentials=("svc-user", "right-password")) as fake:
        url = fake.url.replace("http://", f"http://svc-user:{PASSWORD}@")
        client = SchemaRegistryClient(url)
        with pytest.raises(SchemaRegistryError) as info:
            client.register("ticks.raw-value", avro.schema_json("RawTick"))
        assert info.value.error_code == 401
        assert PASSWORD not in str(info.value)
        assert "s3cr3t" not in repr(info.value)
        with pytest.raises(SchemaRegistryError) as info:
            client.get_schema(1)
        assert "s3cr3t" not in str(info.value)
        assert info.value.__cause__ is None and info.value.__context__ is not None
        assert "s3cr3t" not in str(info.value.__context__)


def test_unreachable_registry_is_not_a_not_found() -> None:
    # grab a free port and close it again: nothing listens there
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = SchemaRegistryClient(f"http://user:{PASSWORD}@127.0.0.1:{port}", timeout=2.0)
    with pytest.raises(SchemaRegistryError) as info:
        client.get_schema(1)
    assert info.value.error_code is None and info.value.status is None
    assert not info.value.not_found
    assert "unreachable" in str(info.value)
    assert "s3cr3t" not in str(info.value)


def test_bad_url_does_not_echo_credentials() -> None:
    with pytest.raises(ValueError) as info:
        SchemaRegistryClient(f"ftp://user:{PASSWORD}@host")
    assert "s3cr3t" not in str(info.value)


def test_fake_leaves_no_thread_behind() -> None:
    before = set(threading.enumerate())
    with FakeSchemaRegistry() as fake:
        client = SchemaRegistryClient(fake.url)
        for _ in range(5):
            client.register("t-value", avro.schema_json("ControlMessage"))
        port = fake.port
    assert set(threading.enumerate()) <= before
    with socket.socket() as sock:  # the listening socket was closed
        assert sock.connect_ex(("127.0.0.1", port)) != 0
