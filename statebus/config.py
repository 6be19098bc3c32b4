"""The node's settings: one frozen, typed :class:`Settings`, loaded once by the server and passed down.

Precedence, highest first: CLI flags (``cli_overrides``) > ``STATEBUS_<NAME>`` environment variables >
the TOML config file (``config_file``, else ``$STATEBUS_CONFIG``) > the defaults below. Every value
is parsed and checked; a bad one raises :class:`InvalidValue` naming where it came from
(``STATEBUS_PORT``, ``config.toml: port``, ``--port``). Core code never reads ``os.environ``.

Sizes take ``1048576``, ``512KiB``, ``1MiB``, ``1MB``; durations ``15``, ``15s``, ``500ms``, ``2m``,
``1h``; rates ``100/second`` or ``10 per minute`` (the ``limits`` package's notation); lists (env)
are comma-separated. Secrets are held in :class:`Secret`, whose ``repr`` and ``str`` are masked.

Imports: stdlib and ``statebus.errors`` only (the bottom layer).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from statebus.errors import InvalidValue

SECONDS: Final = 1.0
MILLISECONDS: Final = 0.001
MINUTES: Final = 60.0
HOURS: Final = 3600.0
KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB

ENV_PREFIX: Final = "STATEBUS_"
CONFIG_ENV: Final = "STATEBUS_CONFIG"
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS: Final = ("text", "json")
DURABILITY: Final = ("power", "process")
"""What an acknowledged write survives: ``power`` (fsync before the answer) or ``process`` (kill -9)."""


class Secret:
    """A secret string whose ``repr`` and ``str`` never show it; call :meth:`reveal` where it is used."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself. Never log it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))


def default_data_dir(env: Mapping[str, str]) -> Path:
    """``$XDG_DATA_HOME/statebus``, else ``~/.local/share/statebus`` (``$HOME`` from ``env``)."""
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "statebus"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "share" / "statebus"


def _setting(default: Any, kind: str, doc: str, lo: float | None = None, hi: float | None = None) -> Any:
    return field(default=default, metadata={"kind": kind, "doc": doc, "lo": lo, "hi": hi})


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a node can be configured with. Construct directly (tests) or with :meth:`load`."""

    host: str = _setting("127.0.0.1", "host", "Address the HTTP server binds to (loopback by default).")
    port: int = _setting(8765, "int", "TCP port of the HTTP server (0 picks a free port).", 0, 65535)
    data_dir: Path = field(
        default_factory=lambda: default_data_dir(os.environ),
        metadata={
            "kind": "path",
            "doc": "Folder for the database and the node identity.",
            "lo": None,
            "hi": None,
        },
    )
    log_level: str = _setting("info", "log_level", "One of debug, info, warning, error, critical.")
    log_format: str = _setting(
        "text", "log_format", "text (uvicorn's lines) or json (one JSON object a line, secrets masked)."
    )
    max_body_bytes: int = _setting(1 * MiB, "bytes", "Largest request body.", 1, 1 * GiB)
    max_value_bytes: int = _setting(1 * MiB, "bytes", "Largest stored value (encoded).", 1, 1 * GiB)
    blob_threshold_bytes: int = _setting(
        64 * KiB,
        "bytes",
        "A binary PUT larger than this is stored as a blob (the op holds a pointer to its sha256).",
        1 * KiB,
        1 * GiB,
    )
    max_blob_bytes: int = _setting(
        1 * GiB, "bytes", "Largest blob (a binary value stored by its hash).", 1 * KiB, 1024 * GiB
    )
    swarm: bool = _setting(
        False, "bool", "Fetch and serve blobs of swarm_min_bytes or more over BitTorrent between nodes."
    )
    swarm_min_bytes: int = _setting(
        1 * MiB, "bytes", "Smallest blob a follower fetches from the swarm (smaller: HTTP).", 1, 1024 * GiB
    )
    swarm_seed_seconds: float = _setting(
        1 * HOURS, "seconds", "How long a node serves a blob it fetched from the swarm.", 0, 30 * 86400
    )
    swarm_hot_requests: int = _setting(
        30,
        "int",
        "Requests a minute past which a blob under swarm_min_bytes becomes a torrent too (0: never).",
        0,
        10**6,
    )
    swarm_announce_ttl: float = _setting(
        30 * MINUTES,
        "seconds",
        "Lifetime of the provider records a seeder announces on the DHT (re-announced every half of it).",
        60,
        6 * HOURS,
    )
    swarm_upload_budget_bytes: int = _setting(
        10 * GiB,
        "bytes",
        "Bytes a node uploads for blobs it fetched before it stops serving them.",
        0,
        1 << 50,
    )
    max_yjs_doc_bytes: int = _setting(
        64 * MiB,
        "bytes",
        "Largest Yjs document (its updates as stored); a write over it gets 413.",
        1 * KiB,
        16 * GiB,
    )
    max_key_bytes: int = _setting(1 * KiB, "bytes", "Longest key path in UTF-8 bytes.", 16, 64 * KiB)
    max_key_depth: int = _setting(32, "int", "Most segments in a key path.", 1, 1024)
    app_memory_bytes: int = _setting(
        16 * MiB,
        "bytes",
        "Linear memory of each hosted app's sandbox (a wasmtime store limit).",
        2 * MiB,
        1 * GiB,
    )
    app_call_timeout: float = _setting(
        0.1,
        "seconds",
        "Wall time one hosted-app handler call may take; past it the write gets 422.",
        0.001,
        60,
    )
    max_json_depth: int = _setting(64, "int", "Deepest nesting of a JSON value.", 1, 1024)
    rate_limit_per_client: str = _setting("100/second", "rate", "Requests per authenticated client key.")
    rate_limit_per_ip: str = _setting("300/second", "rate", "Requests per remote IP address.")
    max_subscriptions_per_client: int = _setting(256, "int", "Open subscriptions per client.", 1, 1_000_000)
    max_sync_body_bytes: int = _setting(
        4 * MiB, "bytes", "Largest anti-entropy request a peer node may send.", 1 * KiB, 16 * MiB
    )
    max_peer_streams: int = _setting(
        0,
        "int",
        "Ops streams other nodes may hold open here at once (0: no cap); past it a new follower is shed "
        "(503 + Retry-After + this node's signed list of relays).",
        0,
        1_000_000,
    )
    relay: bool = _setting(
        False,
        "bool",
        "Offer to relay what this node follows: the servers it streams from may send shed followers here.",
    )
    quota_bytes_per_remote_namespace: int = _setting(
        256 * MiB, "bytes", "Storage a remote namespace may use on this node.", 0, 1024 * GiB
    )
    guest_write_rate: str = _setting(
        "20/minute", "rate", "Ops one other key may write into this node's own namespace (an inbox)."
    )
    guest_write_rate_per_ip: str = _setting(
        "60/minute", "rate", "Ops other keys may write into this node's own namespace from one IP address."
    )
    guest_quota_bytes: int = _setting(
        256 * KiB, "bytes", "Storage one other key's ops may use in this node's own namespace.", 0, 1 * GiB
    )
    notice_queue_max: int = _setting(
        256, "int", "Notices this node's courier keeps waiting for one other namespace's node.", 1, 1_000_000
    )
    notice_queue_bytes: int = _setting(
        256 * KiB,
        "bytes",
        "Bytes of notices the courier keeps waiting for one other namespace's node.",
        1,
        1 * GiB,
    )
    notice_expiry: float = _setting(
        7 * 86400 * SECONDS,
        "seconds",
        "How long the courier retries a notice before it drops it (logged).",
        1,
        365 * 86400,
    )
    notice_retry_max: float = _setting(
        5 * MINUTES, "seconds", "The longest wait between two attempts at delivering a notice.", 0.1, 86400
    )
    signature_max_age: float = _setting(
        300 * SECONDS, "seconds", "Oldest signed request accepted (its nonce is kept this long).", 1, 86400
    )
    max_clock_skew: float = _setting(
        120 * SECONDS,
        "seconds",
        "How far another machine's clock may differ from this one's (signed requests, delegations).",
        0,
        3600,
    )
    signature_max_nonces: int = _setting(
        100_000, "int", "Nonces of signed requests remembered (full: new signed requests get 429).", 1, 10**8
    )
    public_addresses: tuple[str, ...] = _setting(
        (), "list", "host:port names clients reach this node by (signed requests must name one)."
    )
    public_origins: tuple[str, ...] = _setting(
        (),
        "origins",
        "Web origins (scheme://host[:port]) browsers reach this node by, besides the request's own;"
        " an https one gives the login cookie __Host- semantics there.",
    )
    subscriber_buffer: int = _setting(
        1000, "int", "Events buffered per subscriber before it is cut off.", 1, 10**7
    )
    sse_ping_interval: float = _setting(
        15 * SECONDS, "seconds", "Idle SSE/Braid streams get a ping this often.", 0.1, 3600
    )
    stream_stall_timeout: float = _setting(
        60 * SECONDS,
        "seconds",
        "An SSE/Braid stream whose client reads nothing for this long is cut off (it resumes later).",
        0.1,
        86400,
    )
    max_stream_bytes_per_client: int = _setting(
        8 * MiB,
        "bytes",
        "Unsent stream bytes one client (key, else IP) may hold in all; past it, its newest stream is cut.",
        64 * KiB,
        64 * GiB,
    )
    history_keep_ops: int = _setting(
        1000, "int", "Ops kept per key after compaction, for resuming.", 0, 10**9
    )
    snapshot_keep: int = _setting(
        3,
        "int",
        "Signed subtree snapshots kept per subtree (newest first) for followers that lack history.",
        1,
        100,
    )
    snapshot_interval: float = _setting(
        10.0,
        "seconds",
        "Least time between two snapshots of a subtree remade because compaction folded.",
        0,
        86400,
    )
    group_commit_max_batch: int = _setting(
        256, "int", "Most writes committed in one transaction.", 1, 100_000
    )
    group_commit_max_delay: float = _setting(
        2 * MILLISECONDS, "seconds", "Longest a write waits for others to share its commit.", 0, 1
    )
    dht_name: str = _setting("default", "name", "Name of the DHT this node joins.")
    dht_secret: Secret | None = _setting(None, "secret", "Shared secret of an invite-only DHT.")  # noqa: RUF009
    dht_bootstrap: tuple[str, ...] = _setting((), "list", "host:port of DHT peers to join through.")
    dht_port: int = _setting(8766, "int", "UDP port of the DHT (0 picks a free port).", 0, 65535)
    dht_max_records: int = _setting(10_000, "int", "DHT records this node holds for others.", 1, 10**7)
    dht_max_records_per_source: int = _setting(
        500, "int", "DHT records held that one IP address (IPv6: one /64) stored.", 1, 10**7
    )
    dht_max_records_per_prefix: int = _setting(
        1000, "int", "DHT records held per key prefix (leading bits shared with this node's id).", 1, 10**7
    )
    dht_self_check_interval: float = _setting(
        5 * MINUTES,
        "seconds",
        "The node looks its own DHT record up this often; republishes if missing.",
        1,
        86400,
    )
    metrics_public: bool = _setting(False, "bool", "Serve GET /metrics to anonymous clients too.")
    ws_message_rate: int = _setting(
        100, "int", "Websocket messages per second one connection may send (then it is closed).", 1, 10**6
    )
    ws_byte_rate: int = _setting(
        1 * MiB,
        "bytes",
        "Websocket bytes per second one connection may send (then it is closed).",
        1,
        1 * GiB,
    )
    ws_owner_factor: int = _setting(
        10, "int", "How many times the websocket rates above the owner's connections get.", 1, 1000
    )
    header_timeout: float = _setting(
        10 * SECONDS,
        "seconds",
        "A request's headers must be complete this long after its first byte.",
        0.05,
        3600,
    )
    body_timeout: float = _setting(
        30 * SECONDS, "seconds", "A request's body must be complete this long after its headers.", 0.05, 3600
    )
    idle_timeout: float = _setting(
        20 * SECONDS, "seconds", "An idle keep-alive connection is closed after this long.", 0.05, 3600
    )
    max_connections: int = _setting(
        10_000, "int", "Open connections in total (lowered to fit the open-file limit).", 2, 10**7
    )
    max_connections_per_ip: int = _setting(256, "int", "Open connections per client IP address.", 1, 10**7)
    owner_reserve_connections: int = _setting(
        16, "int", "Connections kept for requests that carry the owner token.", 1, 10_000
    )
    trusted_proxies: tuple[str, ...] = _setting(
        (), "networks", "Addresses or CIDRs of reverse proxies whose X-Forwarded-For is believed."
    )
    store_full_check: bool = _setting(
        False, "bool", "Check the store with PRAGMA integrity_check at start (default: quick_check)."
    )
    accept_store_loss: bool = _setting(
        False, "bool", "Start over when the store is behind what this node committed (deleted store)."
    )
    durability: str = _setting(
        "power",
        "durability",
        "What an acknowledged write survives: power (a power cut; fsync per commit) or process "
        "(a crash or kill -9 of the node; fsync at least every second).",
    )
    app_bundle_max_bytes: int = _setting(
        8 * MiB, "bytes", "Largest app bundle (the archive) a node packs, fetches or installs.", 1024, 1 * GiB
    )
    app_fetch_timeout: float = _setting(
        30.0, "seconds", "How long an install through federation waits for the bundle to arrive.", 0.1, 3600.0
    )

    at_rest_key_file: Path | None = _setting(  # noqa: RUF009
        None,
        "key_file",
        "Key file of a data folder encrypted at rest (64 hex digits, mode 0600, outside the folder).",
    )
    mirror_for: tuple[str, ...] = _setting(
        (), "pubkeys", "Pubkeys whose encrypted mirror this node keeps (consent; docs/mirror.md)."
    )
    mirror_quota_bytes: int = _setting(
        1 * GiB, "bytes", "Ciphertext each owner in mirror_for may keep on this node.", 0, 1024 * GiB
    )
    mirror_copies: int = _setting(
        2,
        "int",
        "Copies of the namespace to keep (this node + complete mirrors); fewer is under-replicated.",
        1,
        100,
    )
    mirror_placement: tuple[str, ...] = _setting(
        (), "placements", "SUBTREE=N rules: keep at least N copies of that subtree too (/~/photos/=3)."
    )
    mirror_devices: tuple[str, ...] = _setting(
        (), "devices", "PUBKEY@URL of this owner's devices (delegated keys that follow it): counted copies."
    )
    mirror_push_interval: float = _setting(
        60 * SECONDS,
        "seconds",
        "How often a running node pushes to its mirrors and challenges one.",
        0.1,
        86400,
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), f.name))

    @classmethod
    def load(
        cls,
        cli_overrides: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        config_file: str | Path | None = None,
    ) -> Settings:
        """Load settings: CLI flags > ``STATEBUS_*`` environment > TOML file > defaults.

        Args:
            cli_overrides: setting name → value (typed, or text as typed on a command line); None
                values are skipped, so argparse defaults of None fall through.
            env: the environment (``os.environ`` when None).
            config_file: a TOML file of ``name = value`` lines; else ``$STATEBUS_CONFIG`` if set.

        Raises:
            InvalidValue: an unknown setting in the file or the overrides, a missing or malformed
                file, or a bad value; the detail names the variable, key or flag.

        Example:
            >>> Settings.load({"port": 0}, env={"STATEBUS_LOG_LEVEL": "debug", "HOME": "/h"}).log_level
            'debug'
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = config_file if config_file is not None else env.get(CONFIG_ENV) or None
        if path is not None:
            values.update(_from_toml(Path(path)))
        values.update(_from_env(env))
        for name, raw in (cli_overrides or {}).items():
            if name not in _FIELDS:
                raise InvalidValue(f"unknown setting --{name.replace('_', '-')}")
            if raw is not None:
                values[name] = _coerce(name, raw, f"--{name.replace('_', '-')}")
        values.setdefault("data_dir", default_data_dir(env))
        return cls(**values)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Defaults overridden by ``STATEBUS_*`` variables only."""
        env = os.environ if env is None else env
        return cls(**{"data_dir": default_data_dir(env), **_from_env(env)})

    @classmethod
    def from_toml(cls, path: str | Path) -> Settings:
        """Defaults overridden by a TOML file only."""
        return cls(**_from_toml(Path(path)))


_FIELDS: Final = {f.name: f for f in fields(Settings)}


def env_var(name: str) -> str:
    """The environment variable of a setting: ``port`` → ``STATEBUS_PORT``."""
    return ENV_PREFIX + name.upper()


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _FIELDS:
        var = env_var(name)
        if var in env:
            out[name] = _coerce(name, env[var], var)
    return out


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise InvalidValue(f"config file {path} cannot be read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidValue(f"config file {path} is not valid TOML: {exc}") from None
    out: dict[str, Any] = {}
    for name, raw in data.items():
        if name not in _FIELDS:
            raise InvalidValue(f"config file {path}: unknown setting {name!r}")
        out[name] = _coerce(name, raw, f"{path.name}: {name}")
    return out


_SIZE_RE = re.compile(r"(\d{1,15})\s*(b|kib|mib|gib|kb|mb|gb)?", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {"": 1, "b": 1, "kib": KiB, "mib": MiB, "gib": GiB, "kb": 1000, "mb": 1000**2, "gb": 1000**3}
_DURATION_RE = re.compile(r"(\d{1,9}(?:\.\d{1,9})?|\.\d{1,9})\s*(ms|s|m|h)?", re.IGNORECASE | re.ASCII)
_DURATION_UNITS = {"": SECONDS, "s": SECONDS, "ms": MILLISECONDS, "m": MINUTES, "h": HOURS}
_RATE_RE = re.compile(
    r"[1-9]\d{0,8}\s*(?:/|per)\s*(?:[1-9]\d{0,5}\s*)?(second|minute|hour|day)s?", re.I | re.ASCII
)
_HOST_RE = re.compile(r"[A-Za-z0-9.:\-\[\]%_]{1,253}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}")
_BOOTSTRAP_RE = re.compile(r"[A-Za-z0-9.:\-\[\]_]{1,253}:\d{1,5}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _show(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:60] + "…"


def _coerce(name: str, raw: Any, label: str) -> Any:
    meta = _FIELDS[name].metadata
    kind: str = meta["kind"]
    value = _PARSERS[kind](raw, label)
    lo, hi = meta["lo"], meta["hi"]
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InvalidValue(f"{label}: must be between {_num(lo)} and {_num(hi)}, got {_show(raw)}")
    return value


def _int(raw: Any, label: str) -> int:
    if type(raw) is int:
        return raw
    if isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit() and len(raw.strip()) <= 15:
        return int(raw.strip())
    raise InvalidValue(f"{label}: must be a whole number, got {_show(raw)}")


def _size(raw: Any, label: str) -> int:
    if type(raw) is int:
        return raw
    m = _SIZE_RE.fullmatch(raw.strip()) if isinstance(raw, str) else None
    if m is None:
        raise InvalidValue(f"{label}: must be a size such as 1048576, 512KiB or 1MiB, got {_show(raw)}")
    return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()]


def _seconds(raw: Any, label: str) -> float:
    if type(raw) in (int, float):
        value = float(raw)
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidValue(f"{label}: must be a finite number of seconds")
        return value
    m = _DURATION_RE.fullmatch(raw.strip()) if isinstance(raw, str) else None
    if m is None:
        raise InvalidValue(f"{label}: must be a duration such as 15, 15s, 500ms or 2m, got {_show(raw)}")
    return float(m.group(1)) * _DURATION_UNITS[(m.group(2) or "").lower()]


def _rate(raw: Any, label: str) -> str:
    if not isinstance(raw, str) or not _RATE_RE.fullmatch(raw.strip()):
        raise InvalidValue(f"{label}: must be a rate such as 100/second or 10 per minute, got {_show(raw)}")
    return raw.strip()


def _host(raw: Any, label: str) -> str:
    if not isinstance(raw, str) or not _HOST_RE.fullmatch(raw.strip()):
        raise InvalidValue(f"{label}: must be a host name or IP address, got {_show(raw)}")
    return raw.strip()


def _name(raw: Any, label: str) -> str:
    if not isinstance(raw, str) or not _NAME_RE.fullmatch(raw.strip()):
        raise InvalidValue(f"{label}: must be 1-64 letters, digits, '.', '_' or '-', got {_show(raw)}")
    return raw.strip()


def _log_level(raw: Any, label: str) -> str:
    if not isinstance(raw, str) or raw.strip().lower() not in LOG_LEVELS:
        raise InvalidValue(f"{label}: must be one of {', '.join(LOG_LEVELS)}, got {_show(raw)}")
    return raw.strip().lower()


def _log_format(raw: Any, label: str) -> str:
    if not isinstance(raw, str) or raw.strip().lower() not in LOG_FORMATS:
        raise InvalidValue(f"{label}: must be one of {', '.join(LOG_FORMATS)}, got {_show(raw)}")
    return raw.strip().lower()


def _durability(raw: Any, label: str) -> str:
    if not isinstance(raw, str) or raw.strip().lower() not in DURABILITY:
        raise InvalidValue(f"{label}: must be one of {', '.join(DURABILITY)}, got {_show(raw)}")
    return raw.strip().lower()


def _path(raw: Any, label: str) -> Path:
    if isinstance(raw, Path):
        return raw
    if not isinstance(raw, str) or not raw.strip() or "\0" in raw:
        raise InvalidValue(f"{label}: must be a folder path, got {_show(raw)}")
    try:
        return Path(raw.strip()).expanduser()
    except RuntimeError:  # "~someone" naming no known user (pathlib's only error here)
        raise InvalidValue(f"{label}: {_show(raw)} names the home folder of an unknown user") from None


def _key_file(raw: Any, label: str) -> Path | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return _path(raw, label)


def _secret(raw: Any, label: str) -> Secret | None:
    if raw is None or isinstance(raw, Secret):
        return raw
    if not isinstance(raw, str) or not raw:
        raise InvalidValue(f"{label}: must be a non-empty string")  # never echo a secret
    return Secret(raw)


def _bool(raw: Any, label: str) -> bool:
    if type(raw) is bool:
        return raw
    text = raw.strip().lower() if isinstance(raw, str) else None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise InvalidValue(f"{label}: must be true or false, got {_show(raw)}")


_TRUE: Final = ("true", "yes", "on", "1")
_FALSE: Final = ("false", "no", "off", "0")


def _list(raw: Any, label: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        items: list[Any] = [item.strip() for item in raw.split(",") if item.strip()]
    elif isinstance(raw, list | tuple):
        items = list(raw)
    else:
        raise InvalidValue(f"{label}: must be a list of host:port, got {_show(raw)}")
    for item in items:
        if not isinstance(item, str) or not _BOOTSTRAP_RE.fullmatch(item):
            raise InvalidValue(f"{label}: each entry must be host:port, got {_show(item)}")
    return tuple(items)


_PUBKEY_RE = re.compile(r"[a-z2-7]{52}", re.ASCII)
_PLACEMENT_RE = re.compile(r"/(~|[a-z2-7]{52})/([^/=,]+/)*=[0-9]{1,3}", re.ASCII)
_DEVICE_RE = re.compile(r"[a-z2-7]{52}@https?://[^\s,@]+", re.ASCII)


def _entries(raw: Any, label: str, pattern: re.Pattern[str], form: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        items: list[Any] = [item.strip() for item in raw.split(",") if item.strip()]
    elif isinstance(raw, list | tuple):
        items = list(raw)
    else:
        raise InvalidValue(f"{label}: must be a list of {form}, got {_show(raw)}")
    for item in items:
        if not isinstance(item, str) or not pattern.fullmatch(item):
            raise InvalidValue(f"{label}: write each entry as {form}, got {_show(item)}")
    return tuple(items)


def _placements(raw: Any, label: str) -> tuple[str, ...]:
    return _entries(raw, label, _PLACEMENT_RE, "SUBTREE=N (/~/photos/=3)")


def _devices(raw: Any, label: str) -> tuple[str, ...]:
    return _entries(raw, label, _DEVICE_RE, "PUBKEY@URL (a device node of this owner)")


def _pubkeys(raw: Any, label: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        items: list[Any] = [item.strip() for item in raw.split(",") if item.strip()]
    elif isinstance(raw, list | tuple):
        items = list(raw)
    else:
        raise InvalidValue(f"{label}: must be a list of pubkeys, got {_show(raw)}")
    for item in items:
        if not isinstance(item, str) or not _PUBKEY_RE.fullmatch(item):
            raise InvalidValue(f"{label}: each entry must be a 52-character pubkey, got {_show(item)}")
    return tuple(items)


_ORIGIN_RE = re.compile(r"(https?)://([a-z0-9.\-]{1,253}|\[[0-9a-f:.]{2,45}\])(:\d{1,5})?", re.ASCII)


def _origins(raw: Any, label: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        items: list[Any] = [item.strip() for item in raw.split(",") if item.strip()]
    elif isinstance(raw, list | tuple):
        items = list(raw)
    else:
        raise InvalidValue(f"{label}: must be a list of origins such as https://node.example.org")
    out: list[str] = []
    for item in items:
        text = item.strip().lower().rstrip("/") if isinstance(item, str) else None
        m = _ORIGIN_RE.fullmatch(text) if text is not None else None
        if text is None or m is None or (m.group(3) is not None and not 0 < int(m.group(3)[1:]) <= 65535):
            raise InvalidValue(
                f"{label}: each entry must be scheme://host[:port] (http or https), got {_show(item)}"
            )
        default = {"http": ":80", "https": ":443"}[m.group(1)]
        out.append(text.removesuffix(default) if m.group(3) == default else text)
    return tuple(out)


def _networks(raw: Any, label: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        items: list[Any] = [item.strip() for item in raw.split(",") if item.strip()]
    elif isinstance(raw, list | tuple):
        items = list(raw)
    else:
        raise InvalidValue(f"{label}: must be a list of IP addresses or CIDRs, got {_show(raw)}")
    out: list[str] = []
    for item in items:
        try:
            out.append(str(ipaddress.ip_network(item.strip(), strict=False)) if isinstance(item, str) else "")
        except ValueError:
            out.append("")
        if not out[-1]:
            raise InvalidValue(f"{label}: each entry must be an IP address or CIDR, got {_show(item)}")
    return tuple(out)


_PARSERS: Final[dict[str, Callable[[Any, str], Any]]] = {
    "int": _int,
    "bytes": _size,
    "seconds": _seconds,
    "rate": _rate,
    "host": _host,
    "name": _name,
    "log_level": _log_level,
    "log_format": _log_format,
    "durability": _durability,
    "path": _path,
    "key_file": _key_file,
    "secret": _secret,
    "list": _list,
    "placements": _placements,
    "devices": _devices,
    "pubkeys": _pubkeys,
    "origins": _origins,
    "bool": _bool,
    "networks": _networks,
}
