"""Settings: defaults, typed parsing, precedence CLI > env > TOML > default, clear errors, masked secrets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import limits
import pytest
from hypothesis import given
from hypothesis import strategies as st

from statebus.config import MiB, Secret, Settings, default_data_dir, env_var
from statebus.errors import InvalidValue, StatebusError

ENV = {"HOME": "/home/u"}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_defaults() -> None:
    s = Settings.load(env=ENV)
    assert (s.host, s.port, s.log_level) == ("127.0.0.1", 8765, "info")
    assert s.data_dir == Path("/home/u/.local/share/statebus")
    assert s.max_body_bytes == s.max_value_bytes == 1 * MiB
    assert s.sse_ping_interval == 15.0 and s.dht_secret is None and s.dht_bootstrap == ()


def test_data_dir_follows_xdg() -> None:
    assert default_data_dir({"XDG_DATA_HOME": "/x", "HOME": "/h"}) == Path("/x/statebus")
    assert default_data_dir({"XDG_DATA_HOME": "relative", "HOME": "/h"}) == Path("/h/.local/share/statebus")


def test_precedence_cli_over_env_over_file_over_default(tmp_path: Path) -> None:
    cfg = tmp_path / "statebus.toml"
    cfg.write_text('port = 1111\nhost = "0.0.0.0"\nlog_level = "warning"\nmax_body_bytes = "2MiB"\n')
    env = {**ENV, "STATEBUS_PORT": "2222", "STATEBUS_HOST": "::1"}
    s = Settings.load({"port": 3333, "host": None}, env=env, config_file=cfg)
    assert (s.port, s.host, s.log_level, s.max_body_bytes) == (3333, "::1", "warning", 2 * MiB)
    assert Settings.load(env={**env, "STATEBUS_CONFIG": str(cfg)}).port == 2222
    assert Settings.from_toml(cfg).port == 1111
    assert Settings.from_env(env).host == "::1"


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("max_value_bytes", "512KiB", 512 * 1024),
        ("max_value_bytes", "1MB", 1_000_000),
        ("max_value_bytes", "4096", 4096),
        ("sse_ping_interval", "500ms", 0.5),
        ("sse_ping_interval", "2m", 120.0),
        ("sse_ping_interval", "15", 15.0),
        ("group_commit_max_delay", "0", 0.0),
        ("rate_limit_per_ip", "10 per minute", "10 per minute"),
        ("log_level", "DEBUG", "debug"),
        ("durability", "Process", "process"),
        ("dht_bootstrap", "a.example:8766, 10.0.0.1:1", ("a.example:8766", "10.0.0.1:1")),
        ("data_dir", "~/sb", Path("~/sb").expanduser()),
    ],
)
def test_env_values_are_parsed(name: str, raw: str, expected: object) -> None:
    assert getattr(Settings.load(env={**ENV, env_var(name): raw}), name) == expected


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("port", "http"),
        ("port", "70000"),
        ("port", "-1"),
        ("host", "a b"),
        ("host", ""),
        ("max_body_bytes", "lots"),
        ("max_body_bytes", "\u0661\u0660KiB"),
        ("sse_ping_interval", "\u0661s"),
        ("max_body_bytes", "0"),
        ("max_body_bytes", "2TiB"),
        ("sse_ping_interval", "soon"),
        ("sse_ping_interval", "0.01"),
        ("rate_limit_per_client", "fast"),
        ("rate_limit_per_client", "0/second"),
        ("log_level", "loud"),
        ("durability", "disk"),
        ("dht_bootstrap", "no-port"),
        ("dht_name", "has space"),
        ("dht_port", "1.5"),
    ],
)
def test_bad_env_value_names_the_variable(name: str, raw: str) -> None:
    with pytest.raises(InvalidValue, match=env_var(name)):
        Settings.load(env={**ENV, env_var(name): raw})


def test_bad_file_and_cli_values_name_their_source(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("port = true\n")
    with pytest.raises(InvalidValue, match=r"c\.toml: port"):
        Settings.load(env=ENV, config_file=cfg)
    cfg.write_text("prot = 1\n")
    with pytest.raises(InvalidValue, match="unknown setting 'prot'"):
        Settings.load(env=ENV, config_file=cfg)
    cfg.write_text("port = \n")
    with pytest.raises(InvalidValue, match="not valid TOML"):
        Settings.load(env=ENV, config_file=cfg)
    with pytest.raises(InvalidValue, match="cannot be read"):
        Settings.load(env=ENV, config_file=tmp_path / "missing.toml")
    with pytest.raises(InvalidValue, match="--max-body-bytes"):
        Settings.load({"max_body_bytes": "huge"}, env=ENV)
    with pytest.raises(InvalidValue, match="unknown setting --nope"):
        Settings.load({"nope": 1}, env=ENV)


def test_direct_construction_is_validated_and_frozen() -> None:
    with pytest.raises(InvalidValue, match="port"):
        Settings(port=-5)
    s = Settings(port=0, data_dir="/tmp/x")  # type: ignore[arg-type]
    assert s.data_dir == Path("/tmp/x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]


def test_secret_is_masked_everywhere() -> None:
    s = Settings.load(env={**ENV, "STATEBUS_DHT_SECRET": "hunter2-very-secret"})
    assert isinstance(s.dht_secret, Secret) and s.dht_secret.reveal() == "hunter2-very-secret"
    for text in (repr(s), str(s), repr(s.dht_secret), str(s.dht_secret), f"{s.dht_secret}"):
        assert "hunter2" not in text
    assert s.dht_secret == Secret("hunter2-very-secret") and s.dht_secret != Secret("other")
    with pytest.raises(InvalidValue) as info:
        Settings.load({"dht_secret": 12345678}, env=ENV)
    assert "12345678" not in str(info.value)


def test_default_rates_use_the_limits_package_notation() -> None:
    s = Settings.load(env={**ENV, "STATEBUS_RATE_LIMIT_PER_CLIENT": "5 per 10 seconds"})
    for rate in (s.rate_limit_per_client, s.rate_limit_per_ip):
        assert limits.parse(rate).amount > 0


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for f in dataclasses.fields(Settings):
        assert f"`{f.name}`" in text and f"`{env_var(f.name)}`" in text, f.name


@given(st.sampled_from([f.name for f in dataclasses.fields(Settings)]), st.text(max_size=40))
def test_hostile_env_values_raise_typed_errors_only(name: str, raw: str) -> None:
    try:
        Settings.load(env={**ENV, env_var(name): raw})
    except StatebusError:
        pass


def test_a_home_folder_of_an_unknown_user_is_a_typed_error() -> None:
    # found by the hostile-values property: pathlib raised a bare RuntimeError for "~0"
    with pytest.raises(InvalidValue, match="unknown user"):
        Settings.load(env={**ENV, "STATEBUS_DATA_DIR": "~no-such-user-here"})
