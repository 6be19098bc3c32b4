"""The deployment files name only real settings and the real command line."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from statebus.cli import build_parser
from statebus.config import CONFIG_ENV, Settings, env_var

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SETTING_VARS = {env_var(f.name) for f in dataclasses.fields(Settings)} | {CONFIG_ENV}


@pytest.mark.parametrize(
    "name", ["compose.yaml", "Dockerfile", "statebus.service", "nginx.conf", "Caddyfile"]
)
def test_every_statebus_variable_is_a_setting(name: str) -> None:
    text = (DEPLOY / name).read_text(encoding="utf-8")
    used = set(re.findall(r"\bSTATEBUS_[A-Z_]+\b", text))
    assert used <= SETTING_VARS, used - SETTING_VARS


def test_compose_environment_parses_as_settings() -> None:
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    pairs = re.findall(r"^\s+(STATEBUS_[A-Z_]+): (.+)$", text, re.MULTILINE)
    # compose's ${VAR:-default} takes its default here; a required ${VAR:?…} (the secret) is left out
    defaults = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v.strip().strip('"')) for k, v in pairs}
    env = {k: v for k, v in defaults.items() if "${" not in v}
    env["HOME"] = "/nonexistent"
    settings = Settings.load(env=env)
    assert settings.dht_bootstrap and settings.dht_name == "statebus-compose"
    assert settings.host == "127.0.0.1"  # host networking: nothing listens beyond loopback


def test_the_systemd_command_line_parses() -> None:
    text = (DEPLOY / "statebus.service").read_text(encoding="utf-8")
    line = re.search(r"^ExecStart=\S*/statebus (.+)$", text, re.MULTILINE)
    assert line is not None
    args = build_parser().parse_args(line.group(1).split())
    assert (args.command, args.host, args.port, args.data) == (
        "serve",
        "127.0.0.1",
        "8765",
        "/var/lib/statebus",
    )
