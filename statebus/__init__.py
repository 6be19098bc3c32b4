"""statebus: a reactive key-value node for the decentralised web.

The public API, importable from ``statebus`` directly. Names load lazily (PEP 562), so
``import statebus.keys`` does not pull in the HTTP server or the event loop.

>>> import statebus
>>> statebus.parse_key("/~/app/x", local="a" * 51 + "q").endswith("/app/x")
True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
