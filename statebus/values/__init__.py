"""JSON values and Braid ranges: check, decode, encode, read inside, patch. Pure, no I/O."""

from statebus.values.json import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DEPTH,
    MAX_SAFE_INTEGER,
    CheckedJSON,
    check_json,
    dumps_json,
    loads_json,
)
from statebus.values.ranges import PatchLike, RangeLike, apply_patch, apply_patches, get_range, is_delete
from statebus.values.segments import (
    MAX_RANGE_CHARS,
    MAX_RANGE_DEPTH,
    Field,
    Index,
    Segment,
    Slice,
    format_range,
    parse_range,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "MAX_RANGE_CHARS",
    "MAX_RANGE_DEPTH",
    "MAX_SAFE_INTEGER",
    "CheckedJSON",
    "Field",
    "Index",
    "PatchLike",
    "RangeLike",
    "Segment",
    "Slice",
    "apply_patch",
    "apply_patches",
    "check_json",
    "dumps_json",
    "format_range",
    "get_range",
    "is_delete",
    "loads_json",
    "parse_range",
]
