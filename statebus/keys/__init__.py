"""Key paths: parse, validate, normalise, match. Pure functions, no I/O."""

from statebus.keys.memo import KeyMemo
from statebus.keys.paths import (
    MAX_DEPTH,
    MAX_KEY_BYTES,
    MAX_SEGMENT_BYTES,
    decode_pubkey,
    encode_pubkey,
    is_pubkey,
    is_subtree,
    join,
    key_matches,
    namespace_of,
    parent_of,
    parse_key,
    segments,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_KEY_BYTES",
    "MAX_SEGMENT_BYTES",
    "KeyMemo",
    "decode_pubkey",
    "encode_pubkey",
    "is_pubkey",
    "is_subtree",
    "join",
    "key_matches",
    "namespace_of",
    "parent_of",
    "parse_key",
    "segments",
]
