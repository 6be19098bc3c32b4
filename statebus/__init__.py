"""statebus: a reactive key-value node for the decentralised web.

The public API, importable from ``statebus`` directly. Names load lazily (PEP 562), so
``import statebus.keys`` does not pull in the HTTP server or the event loop.

>>> import statebus
>>> statebus.parse_key("/~/app/x", local="a" * 51 + "q").endswith("/app/x")
True
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
from typing import TYPE_CHECKING, Any


def _refuse_stale_build() -> None:
    """Refuse a compiled module older than its source (setup.py, rule 4).

    An editable install of the compiled build keeps each module's extension beside its ``.py``,
    and the extension wins on import: after an edit (or a ``git checkout``) the old code would run.
    A pure install has no ``statebus__mypyc`` library beside the package and pays one ``stat``.
    Two seconds of slack: a wheel's files are written one after the other at install time.
    """
    here = os.path.dirname(__file__)
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    if not os.path.exists(os.path.join(os.path.dirname(here), "statebus__mypyc" + suffix)):
        return
    for folder in [here, *(entry.path for entry in os.scandir(here) if entry.is_dir())]:
        for entry in os.scandir(folder):
            if not entry.name.endswith(suffix):
                continue
            source = entry.path[: -len(suffix)] + ".py"
            if os.path.exists(source) and os.stat(source).st_mtime > entry.stat().st_mtime + 2:
                raise ImportError(
                    f"{source} changed after it was compiled: rebuild (pip install -e .), or remove the"
                    " compiled modules to run pure Python (find statebus -name '*.so' -delete; rm"
                    " statebus__mypyc*.so)"
                )


_refuse_stale_build()

if TYPE_CHECKING:
    from statebus.bus import Bus, Change, Subscription
    from statebus.config import Settings
    from statebus.errors import (
        AppFailed,
        AppRejected,
        ArchiveInvalid,
        BadBlob,
        BadSignature,
        BadSnapshot,
        BlobPending,
        BlobSwarmed,
        DerivedKey,
        Forbidden,
        HistoryCompacted,
        Incomplete,
        InvalidBundle,
        InvalidInvite,
        InvalidKey,
        InvalidOp,
        InvalidRange,
        InvalidValue,
        InviteRefused,
        MirrorTampered,
        NotAcceptable,
        NotFound,
        OutsideGrant,
        PreconditionFailed,
        QuotaExceeded,
        RangeNotSatisfiable,
        RateLimited,
        ReactiveFailed,
        ReactiveTooDeep,
        RelayDropped,
        RemoteError,
        Shed,
        ShuttingDown,
        StaleParents,
        StatebusError,
        StorageFailed,
        StoreBehind,
        StoreDamaged,
        StoreInUse,
        StoreLocked,
        StoreTooNew,
        StoreUnsupported,
        SubscriberTooSlow,
        SwarmFailed,
        TooLarge,
        Unauthorized,
        VersionConflict,
    )
    from statebus.identity import Identity
    from statebus.keys import decode_pubkey, encode_pubkey, parse_key
    from statebus.oplog import DELETE, Op, Patch, decode_op, encode_op
    from statebus.runtime import EventStream, Node
    from statebus.storage.memory import MemoryStorage
    from statebus.storage.sqlite import SqliteStorage

_EXPORTS = {
    "AppFailed": "statebus.errors",
    "AppRejected": "statebus.errors",
    "BadBlob": "statebus.errors",
    "ArchiveInvalid": "statebus.errors",
    "BadSignature": "statebus.errors",
    "BadSnapshot": "statebus.errors",
    "BlobPending": "statebus.errors",
    "BlobSwarmed": "statebus.errors",
    "Bus": "statebus.bus",
    "Change": "statebus.bus",
    "DELETE": "statebus.oplog",
    "DerivedKey": "statebus.errors",
    "EventStream": "statebus.runtime",
    "Forbidden": "statebus.errors",
    "HistoryCompacted": "statebus.errors",
    "Identity": "statebus.identity",
    "Incomplete": "statebus.errors",
    "InvalidBundle": "statebus.errors",
    "InvalidInvite": "statebus.errors",
    "InvalidKey": "statebus.errors",
    "InvalidOp": "statebus.errors",
    "InvalidRange": "statebus.errors",
    "InvalidValue": "statebus.errors",
    "InviteRefused": "statebus.errors",
    "MirrorTampered": "statebus.errors",
    "MemoryStorage": "statebus.storage.memory",
    "Node": "statebus.runtime",
    "NotAcceptable": "statebus.errors",
    "NotFound": "statebus.errors",
    "OutsideGrant": "statebus.errors",
    "Unauthorized": "statebus.errors",
    "Op": "statebus.oplog",
    "Patch": "statebus.oplog",
    "PreconditionFailed": "statebus.errors",
    "QuotaExceeded": "statebus.errors",
    "RangeNotSatisfiable": "statebus.errors",
    "RateLimited": "statebus.errors",
    "ReactiveFailed": "statebus.errors",
    "ReactiveTooDeep": "statebus.errors",
    "RelayDropped": "statebus.errors",
    "RemoteError": "statebus.errors",
    "Settings": "statebus.config",
    "Shed": "statebus.errors",
    "ShuttingDown": "statebus.errors",
    "SqliteStorage": "statebus.storage.sqlite",
    "StaleParents": "statebus.errors",
    "StatebusError": "statebus.errors",
    "StorageFailed": "statebus.errors",
    "StoreBehind": "statebus.errors",
    "StoreDamaged": "statebus.errors",
    "StoreInUse": "statebus.errors",
    "StoreLocked": "statebus.errors",
    "StoreTooNew": "statebus.errors",
    "StoreUnsupported": "statebus.errors",
    "SubscriberTooSlow": "statebus.errors",
    "SwarmFailed": "statebus.errors",
    "Subscription": "statebus.bus",
    "TooLarge": "statebus.errors",
    "VersionConflict": "statebus.errors",
    "decode_op": "statebus.oplog",
    "decode_pubkey": "statebus.keys",
    "encode_op": "statebus.oplog",
    "encode_pubkey": "statebus.keys",
    "parse_key": "statebus.keys",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'statebus' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
