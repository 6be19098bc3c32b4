"""Secrets kept out of the logs: the owner token in uvicorn's access log, in websocket handshakes and
in websocket frames logged at debug level.

    redact(text)              mask ``?token=``, ``Authorization``, the login cookie, ``{"token": …}``
    mask_frame(arg)           a logged websocket data frame, its payload hidden when it may hold a token
    RedactTokens              the logging filter doing both
    install_log_redaction()   add it to uvicorn's and websockets' loggers (at start-up, idempotent)
    JsonFormatter             ``--log-format json``: one JSON object a line, its message redacted again
    log_config(fmt, level)    uvicorn's ``log_config`` for a format (None: uvicorn's own text lines)
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

_SECRET_RES = (
    (re.compile(r"([?&]token=)[^&\s'\"]*"), r"\1***"),
    (re.compile(r"(/\.statebus/launch\?(?:[^\s'\"]*&)?code=)[^&\s'\"]*"), r"\1***"),  # an app's launch code
    (
        re.compile(
            r"((?:authorization|proxy-authorization)['\"]?\s*[:,]\s*b?['\"]?\s*\w+ )[^\s'\",)]+", re.I
        ),
        r"\1***",
    ),
    (re.compile(r"((?:__Host-)?statebus_\w*=)[^;\s'\",)]*"), r"\1***"),
    (re.compile(r"(\"token\"\s*:\s*\")[^\"]*"), r"\1***"),
)
DATA_OPCODES = frozenset({"TEXT", "BINARY", "CONT"})


def redact(text: str) -> str:
    """Mask owner tokens in ``text``: ``?token=``, ``Authorization: Bearer …``, the login cookie (and an
    app's capability cookie), an app's launch code and a websocket ``{"token": …}`` message."""
    for pattern, repl in _SECRET_RES:
        text = pattern.sub(repl, text)
    return text


def _holds_token(data: bytes) -> bool:
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError):
        return True  # not JSON the node would act on, but it may be a piece of a token message
    return isinstance(msg, dict) and "token" in msg


def mask_frame(arg: object) -> object:
    """A websocket data frame that the websockets library logs at debug level (``< TEXT '…'``), with
    its payload replaced unless it is one whole JSON message without a ``token``: the ``{"token": …}``
    login message, escaped keys, and fragments of a message are never shown."""
    data, opcode = getattr(arg, "data", None), getattr(arg, "opcode", None)
    name = getattr(opcode, "name", None)
    if not isinstance(data, bytes | bytearray) or name not in DATA_OPCODES:
        return arg
    if name != "CONT" and getattr(arg, "fin", True) and not _holds_token(bytes(data)):
        return arg
    return f"{name} [{len(data)} bytes, not shown: it may hold a token]"


class RedactTokens(logging.Filter):
    """Masks secrets in log records: the login link in uvicorn's access log, the Authorization
    header and login cookie that websocket handshakes log at debug level, and websocket frames that
    may hold a ``{"token": …}`` message (:func:`mask_frame`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            # its formatter unpacks the args (client, method, path, version, status): keep their shape
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
            return True
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(mask_frame(a) for a in record.args)
        # elsewhere redact the formatted message: a header name and its value may be separate args
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def install_log_redaction() -> None:
    """Add :class:`RedactTokens` to uvicorn's and websockets' loggers (idempotent)."""
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn", "websockets", "websockets.server"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


ACCESS_FIELDS = ("client", "method", "path", "protocol", "status")
"""The args of a uvicorn access record, in order (its format is ``%s - "%s %s HTTP/%s" %d``)."""


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (UTC, ISO 8601, ms), ``level``, ``logger``, ``message``;
    an access line adds ``client``, ``method``, ``path`` and ``status``; an exception adds ``error``.
    Every string goes through :func:`redact`, after the :class:`RedactTokens` filter already ran."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == len(ACCESS_FIELDS):
            for name, value in zip(ACCESS_FIELDS, args, strict=True):
                entry[name] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_config(fmt: str, level: str) -> dict[str, Any] | None:
    """uvicorn's ``log_config`` for ``fmt``: None for ``text`` (uvicorn's own), else a dictConfig that
    sends uvicorn's, websockets' and statebus's loggers through :class:`JsonFormatter`: access lines
    on stdout, the rest on stderr (as uvicorn does)."""
    if fmt != "json":
        return None
    upper = level.upper()

    def stream(name: str) -> dict[str, Any]:
        return {"class": "logging.StreamHandler", "formatter": "json", "stream": f"ext://sys.{name}"}

    def logger(handler: str) -> dict[str, Any]:
        return {"handlers": [handler], "level": upper, "propagate": False}

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": stream("stderr"), "access": stream("stdout")},
        "loggers": {
            "uvicorn": logger("default"),
            "uvicorn.error": {"level": upper},
            "uvicorn.access": logger("access"),
            "websockets": logger("default"),
            "statebus": logger("default"),
            "kademlia": logger("default"),
            "rpcudp": logger("default"),
        },
    }
