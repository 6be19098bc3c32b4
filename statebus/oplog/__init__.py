"""Ops: the immutable, signed unit of change, and their canonical encoding. Pure, no I/O."""

from statebus.oplog.codec import decode_op, encode_op, mint_version, op_hash, signing_bytes
from statebus.oplog.events import DELETE, KINDS, Op, Patch

__all__ = [
    "DELETE",
    "KINDS",
    "Op",
    "Patch",
    "decode_op",
    "encode_op",
    "mint_version",
    "op_hash",
    "signing_bytes",
]
