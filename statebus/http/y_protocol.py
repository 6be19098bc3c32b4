"""The y-protocols wire format (what y-websocket's ``WebsocketProvider`` speaks), pure: no I/O.

Every websocket message is one binary frame built with lib0's encoding: a ``varUint`` message type,
then its content. ``varUint`` is 7 bits a byte, least significant first, the high bit set on every
byte but the last; a ``varUint8Array`` (and a ``varString``, its UTF-8 bytes) is its length as a
``varUint``, then the bytes.

Rules:

1. Message types (y-websocket): 0 sync, 1 awareness, 2 auth, 3 query awareness. A sync message
   holds a ``varUint`` step (0 step 1: a state vector; 1 step 2: an update; 2 update: an update) and
   a ``varUint8Array``. An awareness message holds one ``varUint8Array``. An auth message from the
   server holds ``varUint`` 0 (permission denied) and a ``varString`` reason.
2. Decoding never trusts a length: a truncated message, a ``varUint`` over 2**53, or a length past
   the end raises :class:`~statebus.errors.InvalidValue`, and nothing of the message is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from statebus.errors import InvalidValue

MESSAGE_SYNC: Final = 0
MESSAGE_AWARENESS: Final = 1
MESSAGE_AUTH: Final = 2
MESSAGE_QUERY_AWARENESS: Final = 3
SYNC_STEP1: Final = 0
SYNC_STEP2: Final = 1
SYNC_UPDATE: Final = 2
PERMISSION_DENIED: Final = 0
_MAX_VAR_UINT: Final = 2**53


def var_uint(n: int) -> bytes:
    """lib0's ``writeVarUint``.

    Example:
        >>> var_uint(300)
        b'\\xac\\x02'
    """
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def var_bytes(data: bytes) -> bytes:
    """lib0's ``writeVarUint8Array``: the length, then the bytes."""
    return var_uint(len(data)) + data


def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    """lib0's ``readVarUint`` at ``pos``: the number and the position after it.

    Raises:
        InvalidValue: the message ends inside it, or it is over 2**53.
    """
    n = shift = 0
    while True:
        if pos >= len(data):
            raise InvalidValue("a y-protocols message ends inside a number")
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if n > _MAX_VAR_UINT:
            raise InvalidValue("a y-protocols number is over 2**53")
        if byte < 0x80:
            return n, pos
        shift += 7


def read_var_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    """lib0's ``readVarUint8Array`` at ``pos``.

    Raises:
        InvalidValue: the length runs past the end of the message.
    """
    size, pos = read_var_uint(data, pos)
    if pos + size > len(data):
        raise InvalidValue("a y-protocols byte array runs past the end of its message")
    return data[pos : pos + size], pos + size


@dataclass(frozen=True, slots=True)
class YMessage:
    """One decoded message: its type, its sync step (sync messages only) and its payload (the
    state vector or update of a sync message, the awareness update, the raw rest otherwise)."""

    kind: int
    step: int | None
    payload: bytes


def decode_message(data: bytes) -> YMessage:
    """A y-websocket message (rule 1).

    Raises:
        InvalidValue: malformed (rule 2).
    """
    kind, pos = read_var_uint(data, 0)
    if kind == MESSAGE_SYNC:
        step, pos = read_var_uint(data, pos)
        if step not in (SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE):
            raise InvalidValue(f"unknown y-protocols sync step {step}")
        payload, _ = read_var_bytes(data, pos)
        return YMessage(kind, step, payload)
    if kind == MESSAGE_AWARENESS:
        payload, _ = read_var_bytes(data, pos)
        return YMessage(kind, None, payload)
    return YMessage(kind, None, data[pos:])


def sync_step1(state_vector: bytes) -> bytes:
    """Sync step 1: "this is my state vector; send me what I lack"."""
    return var_uint(MESSAGE_SYNC) + var_uint(SYNC_STEP1) + var_bytes(state_vector)


def sync_step2(update: bytes) -> bytes:
    """Sync step 2: the answer to a step 1 (``Y.encodeStateAsUpdate(doc, stateVector)``)."""
    return var_uint(MESSAGE_SYNC) + var_uint(SYNC_STEP2) + var_bytes(update)


def sync_update(update: bytes) -> bytes:
    """An update made after the sync."""
    return var_uint(MESSAGE_SYNC) + var_uint(SYNC_UPDATE) + var_bytes(update)


def permission_denied(reason: str) -> bytes:
    """An auth message refusing what the client sent (y-protocols' ``writePermissionDenied``)."""
    return var_uint(MESSAGE_AUTH) + var_uint(PERMISSION_DENIED) + var_bytes(reason.encode("utf-8"))


def adds_structs(update: bytes) -> bool:
    """Whether a Yjs update (v1) holds any item (its first number counts the clients with items):
    an update that holds none can only carry deletions."""
    count, _ = read_var_uint(update, 0) if update else (0, 0)
    return count > 0


__all__ = [
    "MESSAGE_AUTH",
    "MESSAGE_AWARENESS",
    "MESSAGE_QUERY_AWARENESS",
    "MESSAGE_SYNC",
    "SYNC_STEP1",
    "SYNC_STEP2",
    "SYNC_UPDATE",
    "YMessage",
    "adds_structs",
    "decode_message",
    "permission_denied",
    "read_var_bytes",
    "read_var_uint",
    "sync_step1",
    "sync_step2",
    "sync_update",
    "var_bytes",
    "var_uint",
]
