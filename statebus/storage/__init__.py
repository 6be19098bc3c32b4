"""Storage: a small interface and its adapters (memory, SQLite)."""

from statebus.storage.base import KeyRecord, Snapshot, Storage, StoredOp

__all__ = ["KeyRecord", "Snapshot", "Storage", "StoredOp"]
