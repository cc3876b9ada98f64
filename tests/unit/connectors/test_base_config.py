"""The one configuration reader every venue uses (connectors/base/config.py).

Every error reads ``"{file}: {dotted.key}: {what is wrong}"``; unknown keys are refused by
name; a secret never appears in an error.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from connectors.base.collector import CollectorConfigError
from connectors.base.config import (
    BackoffSettings,
    BreakerSettings,
    ConfigReader,
    RateLimitSettings,
    backoff_from,
    breaker_from,
    limiter_from,
    read_yaml,
    reconnect_from,
    shown,
)
from connectors.base.resilience import ReconnectPolicy

SECRET = "s3cr3t-0123456789abcdef"


def reader(data: Any, **kwargs: Any) -> ConfigReader:
    return ConfigReader(data, "x.yaml", **kwargs)


def error(call: Any) -> str:
    with pytest.raises(CollectorConfigError) as info:
        call()
    return str(info.value)


# ---- each type ---------------------------------------------------------------------------
def test_text() -> None:
    r = reader({"a": "  hello ", "n": 5, "e": " ", "z": None})
    assert r.text("a") == "hello"
    assert r.text("absent", "dflt") == "dflt"
    assert r.optional_text("absent") is None and r.optional_text("z") is None
    assert error(lambda: r.text("absent")) == "x.yaml: absent: required (a non-empty string)"
    assert error(lambda: r.text("z")) == "x.yaml: z: required (a non-empty string)"
    assert error(lambda: r.text("n", "d")) == "x.yaml: n: expected a non-empty string, got 5"
    assert error(lambda: r.text("e", "d")) == "x.yaml: e: expected a non-empty string, got ' '"
    # null is "not set" only where a setting is optional
    assert error(lambda: r.text("z", "d")) == (
        "x.yaml: z: expected a non-empty string, got None")


def test_choice_and_url() -> None:
    r = reader({"fmt": "csv", "u": "ftp://h.example/x?apikey=" + SECRET, "v": "https://h/x",
                "w": "https:///nohost", "p": "http://user:" + SECRET + "@h.example/"})
    assert r.choice("absent", ("xml", "json"), "xml") == "xml"
    assert error(lambda: r.choice("fmt", ("xml", "json"), "xml")) == (
        "x.yaml: fmt: expected one of 'xml', 'json', got 'csv'")
    assert r.url("v") == "https://h/x"
    assert error(lambda: r.url("absent")) == "x.yaml: absent: required (an http(s) URL)"
    assert error(lambda: r.url("u")) == (
        "x.yaml: u: expected an http(s) URL, got 'ftp://h.example/x?apikey=***'")
    assert error(lambda: r.url("w")) == "x.yaml: w: expected an http(s) URL, got 'https:///nohost'"
    assert error(lambda: r.url("p", schemes=("wss",), what="a wss:// URL")) == (
        "x.yaml: p: expected a wss:// URL, got 'http://user:***@h.example/'")
    assert r.url("absent", "https://default.example/") == "https://default.example/"


@pytest.mark.parametrize("bad", ["x", True, None, math.nan, math.inf, [1]])
def test_number_refuses_what_is_not_a_finite_number(bad: Any) -> None:
    r = reader({"k": bad})
    assert error(lambda: r.number("k", 1.0, 0.001, 3600)) == (
        f"x.yaml: k: expected a number from 0.001 to 3600, got {shown(bad)}")


def test_number_ranges() -> None:
    r = reader({"zero": 0, "big": 5000, "int": 3, "neg": -1.5})
    assert r.number("absent", 2.5) == 2.5
    assert r.number("int", 0) == 3.0 and isinstance(r.number("int", 0), float)
    assert r.number("zero", 1.0) == 0.0  # lo is included by default
    assert error(lambda: r.number("zero", 1.0, above=True)) == (
        "x.yaml: zero: expected a number > 0, got 0")
    assert error(lambda: r.number("neg", 1.0)) == "x.yaml: neg: expected a number >= 0, got -1.5"
    assert error(lambda: r.number("big", 1.0, 0, 1000, above=True)) == (
        "x.yaml: big: expected a number above 0 and at most 1000, got 5000")
    assert r.number("neg", 0.0, -14, 14) == -1.5
    assert r.optional_number("absent") is None
    assert error(lambda: r.optional_number("big", 0.01, 60)) == (
        "x.yaml: big: expected a number from 0.01 to 60, got 5000")


def test_integer_and_flag() -> None:
    r = reader({"i": 7, "f": 7.0, "s": "7", "b": True, "z": None, "yes": "yes", "t": False})
    assert r.integer("i", 0, 1, 10) == 7 and r.integer("absent", 3) == 3
    assert error(lambda: r.integer("i", 0, 1, 5)) == (
        "x.yaml: i: expected an integer from 1 to 5, got 7")
    assert error(lambda: r.integer("f", 0)) == "x.yaml: f: expected an integer >= 0, got 7.0"
    assert error(lambda: r.integer("s", 0, lo=1)) == "x.yaml: s: expected an integer >= 1, got '7'"
    assert error(lambda: r.integer("b", 0)) == "x.yaml: b: expected an integer >= 0, got True"
    assert error(lambda: r.integer("z", 0)) == "x.yaml: z: expected an integer >= 0, got None"
    assert r.optional_integer("z") is None and r.optional_integer("i", lo=1) == 7
    assert r.flag("t", True) is False and r.flag("absent", True) is True
    assert error(lambda: r.flag("yes", True)) == "x.yaml: yes: expected true or false, got 'yes'"


def test_currencies_headers_and_mappings() -> None:
    r = reader({"c": ["usd", " eur"], "none": [], "bad": ["USDX"],
                "h": {"Authorization": "Bearer " + SECRET}, "hbad": {"Authorization": SECRET,
                                                                     "X-Retry": 3},
                "hlist": ["Bearer " + SECRET], "m": {"a": 1}, "mbad": "a=1"})
    assert r.currencies("c") == {"USD", "EUR"}
    assert r.currencies("none") is None and r.currencies("absent") is None
    assert error(lambda: r.currencies("bad")) == (
        "x.yaml: bad: expected a list of 3-letter currency codes, got ['USDX']")
    assert r.headers("h") == {"Authorization": "Bearer " + SECRET} and r.headers("absent") == {}
    hbad = error(lambda: r.headers("hbad"))
    assert hbad == "x.yaml: hbad.X-Retry: expected a string value, got type int"
    hlist = error(lambda: r.headers("hlist"))
    assert hlist == ("x.yaml: hlist: expected a mapping of header name to string value, "
                     "got type list")
    assert SECRET not in hbad + hlist
    assert r.mapping("m") == {"a": 1} and r.mapping("absent") == {}
    assert error(lambda: r.mapping("mbad")) == "x.yaml: mbad: expected a mapping, got 'a=1'"


def test_long_values_are_cut_in_errors() -> None:
    r = reader({"k": "x" * 500})
    message = error(lambda: r.number("k", 1.0))
    assert message.startswith("x.yaml: k: expected a number >= 0, got 'xxx")
    assert message.endswith("...") and len(message) < 150


# ---- unknown keys ------------------------------------------------------------------------
def test_only_refuses_unknown_keys_naming_them() -> None:
    assert error(lambda: reader({"a": 1, "colour": 2}).only({"a", "b"})) == (
        "x.yaml: colour: unknown setting (known: a, b)")
    assert error(lambda: reader({"zz": 1, "colour": 2}).only({"a"})) == (
        "x.yaml: colour, zz: unknown settings (known: a)")
    reader({"a": 1}).only({"a", "b"})  # nothing unknown


def test_finish_refuses_keys_nobody_read() -> None:
    r = reader({"a": 1, "pol_interval_s": 5})
    assert r.integer("a", 0) == 1
    r.number("poll_interval_s", 300.0)
    assert error(r.finish) == (
        "x.yaml: pol_interval_s: unknown setting (known: a, poll_interval_s)")
    done = reader({"a": 1})
    done.integer("a", 0)
    done.finish()


def test_nested_sections_and_entries_have_dotted_names() -> None:
    r = reader({"reconnect": {"base_s": "x", "extra": 1}, "empty": None, "bad": [1],
                "feeds": [{"url": "http://a.example/", "nme": "a"}, 5]})
    sub = r.section("reconnect")
    assert error(lambda: sub.number("base_s", 1.0, 0.001, 3600)) == (
        "x.yaml: reconnect.base_s: expected a number from 0.001 to 3600, got 'x'")
    assert error(lambda: r.section("reconnect", {"base_s"})) == (
        "x.yaml: reconnect.extra: unknown setting (known: base_s)")
    assert r.section("empty").data == {} and r.section("absent").data == {}
    assert error(lambda: r.section("bad")) == "x.yaml: bad: expected a mapping, got [1]"
    deeper = r.section("reconnect").section("inner")
    assert error(lambda: deeper.text("k")) == (
        "x.yaml: reconnect.inner.k: required (a non-empty string)")
    feeds = r.entries("feeds")
    first = r.child(feeds[0], "feeds[0]")
    first.url("url")
    assert error(first.finish) == "x.yaml: feeds[0].nme: unknown setting (known: url)"
    assert error(lambda: r.child(feeds[1], "feeds[1]")) == (
        "x.yaml: feeds[1]: expected a mapping, got 5")
    assert error(lambda: r.entries("absent")) == "x.yaml: absent: required (a non-empty list)"
    assert error(lambda: reader({"f": []}).entries("f")) == (
        "x.yaml: f: expected a non-empty list, got []")


def test_for_file_names_the_file_unwraps_and_checks_kind(tmp_path: Path) -> None:
    assert error(lambda: ConfigReader.for_file({"a": "b"}, None, "demo").text("x")) == (
        "<demo config>: x: required (a non-empty string)")
    r = ConfigReader.for_file({"demo": {"a": "b"}}, str(tmp_path / "d.yaml"), "demo")
    assert r.text("a") == "b" and r.base_dir == tmp_path
    assert ConfigReader.for_file({"kind": "demo"}, None, "demo").data == {"kind": "demo"}
    assert error(lambda: ConfigReader.for_file({"kind": "oanda"}, "d.yaml", "demo")) == (
        "d.yaml: kind: expected 'demo', got 'oanda'")
    assert error(lambda: ConfigReader.for_file([1, 2], "d.yaml", "demo")) == (
        "d.yaml: expected a mapping of settings, got [1, 2]")


def test_read_yaml(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("a: 1\n")
    assert read_yaml(good) == {"a": 1}
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\n b: [\n")
    assert error(lambda: read_yaml(bad)).startswith(f"{bad}: not valid YAML (line ")
    assert error(lambda: read_yaml(tmp_path / "nope.yaml")) == (
        f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory")


# ---- secrets -----------------------------------------------------------------------------
def secret_of(data: dict[str, Any], env: dict[str, str], base_dir: Path | None = None,
              default_env: str | None = "DEMO_TOKEN") -> tuple[Any, str]:
    r = reader(data, env=env, base_dir=base_dir)
    return r.secret(env_key="token_env", file_key="token_file", what="demo token",
                    default_env=default_env)


def test_secret_from_env_default_env_and_file_twin(tmp_path: Path) -> None:
    secret, source = secret_of({}, {"DEMO_TOKEN": f" {SECRET}\n"})
    assert secret.get() == SECRET and source == "$DEMO_TOKEN"
    secret, source = secret_of({"token_env": "OTHER"}, {"OTHER": SECRET, "DEMO_TOKEN": "no"})
    assert secret.get() == SECRET and source == "$OTHER"
    twin = tmp_path / "twin"
    twin.write_text(SECRET + "\n")
    secret, source = secret_of({}, {"DEMO_TOKEN_FILE": str(twin)})
    assert secret.get() == SECRET and source == f"file {twin}"
    assert SECRET not in repr(secret) and SECRET not in f"{secret}"


def test_secret_from_a_file_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "t").write_text(SECRET + "\n")
    secret, source = secret_of({"token_file": "secrets/t"}, {}, base_dir=tmp_path)
    assert secret.get() == SECRET and source == f"file {tmp_path / 'secrets' / 't'}"
    (tmp_path / "empty").write_text("\n")
    assert error(lambda: secret_of({"token_file": "empty"}, {}, base_dir=tmp_path)) == (
        f"x.yaml: token_file: {str(tmp_path / 'empty')!r} is empty")
    assert error(lambda: secret_of({"token_file": "/nonexistent/t"}, {})) == (
        "x.yaml: token_file: cannot read '/nonexistent/t': No such file or directory")
    assert error(lambda: secret_of({}, {"DEMO_TOKEN_FILE": "/nonexistent/t"})) == (
        "x.yaml: token_env: cannot read '/nonexistent/t' (named by $DEMO_TOKEN_FILE): "
        "No such file or directory")


@pytest.mark.parametrize("key", ["token", "api_key", "password"])
def test_a_plain_secret_in_the_file_is_refused_unquoted(key: str) -> None:
    message = error(lambda: secret_of({key: SECRET}, {"DEMO_TOKEN": "x"}))
    assert message == (f"x.yaml: {key}: must not be written in the config file: set token_env "
                       "(the name of an environment variable) or token_file (a secret file)")
    assert error(lambda: reader({key: SECRET}).refuse_plain_secrets("a_env", "a_file")).startswith(
        f"x.yaml: {key}: must not be written in the config file: set a_env ")


def test_secret_errors_never_quote_a_secret() -> None:
    assert error(lambda: secret_of({}, {})) == (
        "x.yaml: token_env: the demo token is not set: export DEMO_TOKEN or point token_file "
        "(or DEMO_TOKEN_FILE) at a secret file")
    pasted = error(lambda: secret_of({"token_env": SECRET}, {}))
    assert pasted == ("x.yaml: token_env: expected the name of an environment variable "
                      "(letters, digits and _)")
    both = error(lambda: secret_of({"token_env": "A", "token_file": "/x"}, {"A": SECRET}))
    assert both == "x.yaml: token_env: set token_env or token_file, not both"
    assert error(lambda: secret_of({}, {}, default_env=None)) == (
        "x.yaml: token_env: the demo token is not set: set token_env (the name of an "
        "environment variable) or token_file (a secret file)")


def test_optional_secret_is_none_when_nothing_names_one() -> None:
    r = reader({}, env={"DEMO_TOKEN": SECRET})
    assert r.optional_secret(env_key="token_env", file_key="token_file", what="t") == (
        None, "none")
    r = reader({"token_env": "UNSET"}, env={})
    assert error(lambda: r.optional_secret(env_key="token_env", file_key="token_file",
                                           what="t")).startswith(
        "x.yaml: token_env: the t is not set: export UNSET ")


# ---- the policy factories ----------------------------------------------------------------
def test_backoff_breaker_and_limiter_sections() -> None:
    assert backoff_from(reader({}).section("backoff")) == BackoffSettings()
    r = reader({"backoff": {"base_s": 1, "factor": 3, "cap_s": 9, "max_attempts": 4}})
    b = backoff_from(r.section("backoff"), base_s=5.0)
    assert b == BackoffSettings(1.0, 3.0, 9.0, 4)
    live = b.backoff()
    assert (live.base_s, live.factor, live.cap_s, live.max_attempts) == (1.0, 3.0, 9.0, 4)
    assert error(lambda: backoff_from(reader({"backoff": {"factor": 0.5}}).section("backoff"))) == (
        "x.yaml: backoff.factor: expected a number >= 1, got 0.5")
    assert error(lambda: backoff_from(reader({"backoff": {"cap": 1}}).section("backoff"))) == (
        "x.yaml: backoff.cap: unknown setting (known: base_s, cap_s, factor, max_attempts)")
    assert breaker_from(reader({}).section("circuit")) == BreakerSettings(5, 60.0)
    circuit = reader({"circuit": {"threshold": 0}}).section("circuit")
    assert error(lambda: breaker_from(circuit)) == (
        "x.yaml: circuit.threshold: expected an integer >= 1, got 0")
    breaker = BreakerSettings(2, 5.0).breaker()
    assert (breaker.threshold, breaker.reset_s) == (2, 5.0)
    assert limiter_from(reader({}).section("rate_limit"), per_s=0.2) == RateLimitSettings(0.2, 1)
    assert error(lambda: limiter_from(reader({"rate_limit": {"per_s": -1}})
                                      .section("rate_limit"), per_s=1.0)) == (
        "x.yaml: rate_limit.per_s: expected a number > 0, got -1")
    assert RateLimitSettings(4.0, 2).limiter().rate == 4.0


def test_reconnect_section() -> None:
    assert reconnect_from(reader({})) == ReconnectPolicy()
    policy = reconnect_from(reader({"reconnect": {"base_s": 0.5, "breaker_threshold": 3}}))
    assert (policy.base_s, policy.breaker_threshold) == (0.5, 3)
    oanda = ConfigReader({"reconnect": {"base_s": "x"}}, "oanda.yaml")
    assert error(lambda: reconnect_from(oanda)) == (
        "oanda.yaml: reconnect.base_s: expected a number from 0.001 to 3600, got 'x'")
    assert error(lambda: reconnect_from(reader({"reconnect": {"base": 1}}))) == (
        "x.yaml: reconnect.base: unknown setting (known: base_s, breaker_reset_s, "
        "breaker_threshold, cap_s, max_attempts)")
