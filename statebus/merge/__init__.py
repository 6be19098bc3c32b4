"""Merge types: how the ops of one key fold into its value. Pure, no I/O.

``lww`` (the default) orders ops by (Lamport clock, author, version) and folds them in that order;
``yjs`` keeps a pycrdt document and merges Yjs updates. New merge types register in
:mod:`statebus.merge.registry`.
"""

from statebus.merge.base import MergeState, Order
from statebus.merge.registry import MERGE_TYPES, default_merge, load_state, new_state

__all__ = ["MERGE_TYPES", "MergeState", "Order", "default_merge", "load_state", "new_state"]
