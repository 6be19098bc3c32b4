"""The bus: statebus's core. Reads, writes, remote ops, subscriptions and reactive keys.

Rules:

1. The bus does no I/O of its own. It reads through the injected :class:`Storage` (synchronous
   calls) and never writes to it directly: every stored op goes to an outbox, and the owner of the
   bus (the runtime's group committer, or :meth:`Bus.flush` in plain code) makes it durable, then
   calls :meth:`Bus.mark_durable`.
2. Every change gets the next node sequence number; subscribers see changes in that order,
   exactly once, synchronously.
3. A write that fails validation raises a :class:`StatebusError` and changes nothing: no seq is
   taken, nothing reaches the outbox, no subscriber hears of it.
4. Ops made here are signed by the injected ``signer``; ops from outside go through ``verifier``
   first. Both belong to the identity layer.
5. A change that never reached disk is never served: when storage refuses a batch, its owner calls
   :meth:`Bus.rollback`, which drops everything not durable (the outbox, queued snapshots and every
   cached entry holding such ops; they reload from storage). While :attr:`Bus.storage_refused` is
   set every write and remote op raises :class:`StorageFailed`, and while
   :attr:`Bus.local_refused` is set every local write raises :class:`StoreBehind`; either way
   nothing changed. Reads with ``durable=True`` (the node's GET and listings) serve a key whose
   newest op is still on its way to disk as it was before that op (kept in the outbox while the
   op is in flight), so a write that then fails was never served at all.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from statebus.bus.changes import Change, op_change
from statebus.bus.entry import Entry, encode_snapshot, rebuild
from statebus.bus.handlers import Handler, Handlers, OnSave, ToFetch, ToSave
from statebus.bus.history import (
    HistoryPage,
    fold,
    gap,
    history_page,
    missing_changes,
    missing_versions,
    rebased,
    state_at,
    yjs_update_at,
    yjs_updates_after,
)
from statebus.bus.outbox import Outbox
from statebus.bus.reactive import Computed, Reactive, ReactiveFn
from statebus.bus.subscriptions import Callback, Subscription, Subscriptions
from statebus.errors import (
    BadSnapshot,
    DerivedKey,
    Forbidden,
    HistoryCompacted,
    InvalidKey,
    InvalidOp,
    InvalidRange,
    NotFound,
    StaleParents,
    StatebusError,
    StorageFailed,
    StoreBehind,
    StoreDamaged,
    VersionConflict,
)
from statebus.keys import KeyMemo, is_subtree, namespace_of, parse_key
from statebus.merge import MergeState, default_merge, new_state
from statebus.oplog.codec import check_version, decode_op, encode_op, new_op
from statebus.oplog.events import DELETE, Op, Patch
from statebus.oplog.log import OpLog
from statebus.storage.base import Snapshot, Storage, StoredOp, stored_op
from statebus.types import Key, PubKey, Seq, Version
from statebus.values import DEFAULT_MAX_BYTES, CheckedJSON, check_json, dumps_json, get_range

Signer = Callable[[Op], Op]
BatchSigner = Callable[[list[Op]], list[Op]]
Verifier = Callable[[Op], None]

MAX_RESUME_OPS = 100_000
MAX_CLOCK_JUMP = 2**32
"""A remote op's Lamport clock may run at most this far ahead of what the key has seen: a peer
cannot push a key's clock to the 2^53 limit and make every later write unencodable."""


def _own_json(value: Any, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Check a caller's JSON value and return a private copy, so later mutation by the caller
    cannot change a stored op behind the bus's back. Raises InvalidValue / TooLarge."""
    check_json(value, max_bytes=max_bytes)
    return json.loads(dumps_json(value))  # already checked: the plain C decoder makes the copy


def _canonical(op: Op) -> Op:
    """Reject an op that would not survive encode → decode unchanged (what storage and peers see)."""
    try:
        same = decode_op(encode_op(op)) == op
    except StatebusError as exc:
        raise InvalidOp(f"op is not canonical: {exc.detail}") from None
    if not same:
        raise InvalidOp("op is not canonical: it does not survive encoding (non-JSON body or stray fields)")
    return op


class Bus:
    """The in-process store.

    >>> from statebus.storage.memory import MemoryStorage
    >>> bus = Bus(MemoryStorage(), local="a" * 51 + "q")
    >>> bus.save("/~/hello", {"n": 1}).value
    {'n': 1}
    """

    def __init__(
        self,
        storage: Storage,
        local: PubKey,
        *,
        signer: Signer | None = None,
        verifier: Verifier | None = None,
        keep_ops: int = 1000,
        cache_keys: int = 50_000,
        max_doc_bytes: int | None = None,
        max_value_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.storage = storage
        self.keys = KeyMemo(local)
        """The parsed keys this bus has seen: every key the node parses goes through it."""
        self.signer = signer
        self.verifier = verifier
        self.keep_ops = keep_ops
        self.cache_keys = cache_keys
        self.max_doc_bytes = max_doc_bytes
        """The largest CRDT document a local write may grow (``check_size``); None: no cap."""
        self.max_value_bytes = max_value_bytes
        """The largest local JSON value (or patch content), encoded (``settings.max_value_bytes``)."""
        self._seq: Seq = storage.max_seq()
        self._durable: Seq = self._seq
        self._taken: Seq = self._seq
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self.outbox = Outbox()
        self.subscriptions = Subscriptions()
        self.handlers = Handlers()
        self.reactive_keys = Reactive(self)
        self.storage_refused: str | None = None
        """Why storage takes no writes now (set by the bus's owner); every write raises
        :class:`StorageFailed` with it."""
        self.local_refused: str | None = None
        """Why local writes are refused (the store is behind what this node committed); each raises
        :class:`StoreBehind` with it. Remote ops (a restore) still apply."""

    # ------------------------------------------------------------------ keys and entries

    @property
    def local(self) -> PubKey:
        """The local namespace (``/~/``): fixed for the life of the bus."""
        return self.keys.local

    @property
    def keys_in_memory(self) -> int:
        """How many keys the bus holds in memory now (at most ``cache_keys``, plus any whose ops
        are still on their way to disk)."""
        return len(self._entries)

    @property
    def seq(self) -> Seq:
        """The cursor of the newest change."""
        return self._seq

    @property
    def durable_seq(self) -> Seq:
        """The cursor up to which every op is on disk (:meth:`mark_durable`)."""
        return self._durable

    @property
    def taken_seq(self) -> Seq:
        """The cursor of the last op handed out by :meth:`take_outbox` (written, or being written)."""
        return self._taken

    def parse(self, key: str, *, allow_subtree: bool = True) -> Key:
        """The normal form of ``key`` (``/~/`` names the local namespace). Raises InvalidKey."""
        return self.keys.parse(key, allow_subtree=allow_subtree)

    def _entry(self, key: Key) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry
        record = self.storage.load(key)
        if record is None:
            return None
        try:
            entry = rebuild(record)
        except Exception as exc:
            raise StoreDamaged(
                f"the stored history of {key} cannot be read ({type(exc).__name__}): the store is damaged; "
                "stop the node and take the data back with `statebus restore --from URL`"
            ) from None
        if entry is None:
            return None
        self._entries[key] = entry
        self._evict()
        return entry

    def _evict(self) -> None:
        # never evict the newest entry: the caller is about to use (and maybe write to) it
        while len(self._entries) > max(1, self.cache_keys):
            key, entry = next(iter(self._entries.items()))
            if entry.last_seq > self._durable:
                return  # the oldest entry still has ops on their way to disk
            del self._entries[key]

    # ------------------------------------------------------------------ reads

    def fetch(self, key: str, rng: str | None = None, *, durable: bool = False) -> Change:
        """The current state of ``key`` as a ``snapshot`` change (with ``durable``, the state on
        disk: without the ops still on their way there). Raises NotFound."""
        snap = self.fetch_or_none(key, durable=durable)
        if snap is None or not snap.exists:
            if snap is not None and snap.kind == "derived":
                failed = self.reactive_keys.failure(snap.key)
                if failed is not None:
                    raise failed
            raise NotFound(f"no value at {key}")
        if rng:
            if snap.content_type is not None:
                raise InvalidRange("a range applies to JSON values, not to bytes")
            snap = dataclasses.replace(snap, value=get_range(snap.value, rng))
        return snap

    def fetch_or_none(self, key: str, *, durable: bool = False) -> Change | None:
        k = self.parse(key, allow_subtree=False)
        if self.handlers:
            found, value = self.handlers.fetch(k)
            if found:
                return Change(k, self._seq, "snapshot", True, value, None, (), ())
        computed = self.reactive_keys.get(k)
        if computed is not None:
            version = (f"derived-{computed.generation}",)
            return Change(k, self._seq, "derived", computed.exists, computed.value, None, version, ())
        if durable and k in self.outbox.stable:
            held = self.outbox.stable[k]
            if held is None:
                return None
            seq, exists, value, content_type, frontier, merge = held
            return Change(k, seq, "snapshot", exists, value, content_type, frontier, (), merge)
        entry = self._entry(k)
        if entry is None:
            return None
        return self._snapshot(k, entry)

    def _snapshot(self, key: Key, entry: Entry, *, last: bool = True) -> Change:
        st = entry.state
        return Change(
            key,
            entry.last_seq,
            "snapshot",
            st.exists,
            st.value,
            st.content_type,
            entry.log.sorted_frontier(),
            (),
            entry.merge,
            last=last,
        )

    def merge_state(self, key: str) -> MergeState | None:
        entry = self._entry(self.parse(key, allow_subtree=False))
        return None if entry is None else entry.state

    def children(self, prefix: str, after: str = "", limit: int = 100, *, durable: bool = False) -> list[str]:
        """Names directly under the subtree ``prefix`` ("name", or "name/" for a deeper subtree);
        with ``durable``, as on disk (a key created by an op still in flight is not listed)."""
        p = self.parse(prefix)
        if not is_subtree(p):
            p += "/"
        names = set(self.storage.children(p, after, limit))
        stables = self.outbox.stable
        for key, exists in self.outbox.fresh.items():
            if durable and key in stables:
                stable = stables[key]
                exists = stable is not None and stable[1]
            if exists and key.startswith(p):
                rest = key[len(p) :]
                cut = rest.find("/")
                name = rest if cut == -1 else rest[: cut + 1]
                if name > after:
                    names.add(name)
        return sorted(names)[:limit]

    def walk(self, prefix: Key, limit: int) -> list[Key]:
        """Every existing key under ``prefix``, depth first, at most ``limit`` of them."""
        out: list[Key] = []
        stack = [prefix]
        while stack and len(out) < limit:
            p = stack.pop()
            after = ""
            while len(out) < limit:
                names = self.children(p, after, 500)
                if not names:
                    break
                for name in names:
                    if name.endswith("/"):
                        stack.append(p + name)
                    else:
                        out.append(p + name)
                after = names[-1]
        return out[:limit]

    # ------------------------------------------------------------------ local writes

    def save(
        self,
        key: str,
        value: Any,
        *,
        content_type: str | None = None,
        version: Version | None = None,
        parents: Sequence[Version] | None = None,
        merge: str | None = None,
        author: PubKey | None = None,
        peer: str | None = None,
    ) -> Change:
        """Replace the value of ``key`` (JSON, or bytes with a ``content_type``).

        A JSON value is checked and copied, so the caller's later mutation cannot reach the
        stored op; a :class:`~statebus.values.CheckedJSON` (what
        :func:`~statebus.values.loads_json` returns, such as a request body just parsed) is fresh
        and kept as it is, and checked again only if its decode does not prove
        :func:`check_json` (:attr:`~statebus.values.CheckedJSON.passes_check`).
        """
        if isinstance(value, bytes | bytearray):
            if not content_type:
                raise InvalidOp("a bytes value needs a content type")
            value = bytes(value)
        elif content_type is not None:
            raise InvalidOp("a JSON value takes no content type")
        elif type(value) is CheckedJSON:
            if not value.passes_check or self.max_value_bytes != DEFAULT_MAX_BYTES:
                check_json(value.value, max_bytes=self.max_value_bytes)
            value = value.value
        else:
            value = _own_json(value, self.max_value_bytes)
        return self._write(key, "set", value, content_type, version, parents, merge, author, peer)

    def patch(
        self,
        key: str,
        patches: Iterable[Patch],
        *,
        version: Version | None = None,
        parents: Sequence[Version] | None = None,
        author: PubKey | None = None,
        peer: str | None = None,
    ) -> Change:
        """Apply Braid range patches to the JSON value of ``key``, all or nothing."""
        body = tuple(
            p if p.content is DELETE else Patch(p.range, _own_json(p.content, self.max_value_bytes))
            for p in patches
        )
        if not body:
            raise InvalidOp("a patch needs at least one range patch")
        return self._write(key, "patch", body, None, version, parents, None, author, peer)

    def crdt_update(
        self,
        key: str,
        update: bytes,
        *,
        merge: str = "yjs",
        version: Version | None = None,
        parents: Sequence[Version] | None = None,
        author: PubKey | None = None,
        peer: str | None = None,
    ) -> Change:
        """Merge a CRDT update (Yjs update bytes) into ``key``."""
        return self._write(key, "crdt", bytes(update), None, version, parents, merge, author, peer)

    def delete(
        self,
        key: str,
        *,
        version: Version | None = None,
        parents: Sequence[Version] | None = None,
        author: PubKey | None = None,
        peer: str | None = None,
    ) -> Change:
        """Delete ``key``. Raises NotFound if it holds no value."""
        k = self.parse(key, allow_subtree=False)
        if self.reactive_keys.covers(k):
            raise DerivedKey(f"{k} is a derived key: its value is computed, not deleted")
        entry = self._entry(k)
        retry = version is not None and entry is not None and version in entry.log
        if (entry is None or not entry.state.exists) and not retry:
            raise NotFound(f"no value at {k}")
        return self._write(k, "delete", None, None, version, parents, None, author, peer)

    def _write(
        self,
        key: str,
        kind: str,
        body: Any,
        content_type: str | None,
        version: Version | None,
        parents: Sequence[Version] | None,
        merge: str | None,
        author: PubKey | None,
        peer: str | None,
    ) -> Change:
        if self.storage_refused is not None or self.local_refused is not None:
            self._refuse(local=True)
        k = self.keys.parse_one(key)
        if self.reactive_keys.covers(k):
            raise DerivedKey(f"{k} is a derived key: its value is computed, not written; write its inputs")
        entry = self._entry(k)
        if entry is not None:
            if merge is not None and merge != entry.merge:
                raise InvalidOp(f"{k} has merge type {entry.merge!r}, not {merge!r}")
            merge = entry.merge
        elif merge is None:
            merge = default_merge(kind)
        if version is not None:
            check_version(version)
            if entry is not None and (entry.log.get(version) is not None or entry.log.folded(version)):
                return self._rewrite(k, entry, version, kind, body, content_type, parents)
        if parents is None:
            ps: tuple[Version, ...] = entry.log.sorted_frontier() if entry else ()
        else:
            ps = tuple(sorted({check_version(p) for p in parents}))
            self._check_parents(k, entry, ps)
            if version is not None and version in ps:
                raise InvalidOp("an op cannot name its own version as a parent")
        clock = (entry.log.clock if entry else 0) + 1
        if clock >= 2**53:
            raise InvalidOp("this key's Lamport clock is exhausted")
        op = new_op(k, version or "", ps, author or self.local, clock, merge, kind, body, content_type)
        if entry is not None and op.version in entry.log:
            return self._snapshot(k, entry)  # a minted version repeats only for the same op
        if self.handlers:
            op = self._handled(op)
        state = entry.state if entry is not None else new_state(merge)
        state.check(op)
        if op.kind == "crdt" and self.max_doc_bytes is not None:
            state.check_size(op, self.max_doc_bytes)
        if self.signer is not None:
            op = self.signer(op)
        return self._commit(k, entry, state, op, peer)

    def _rewrite(
        self,
        key: Key,
        entry: Entry,
        version: Version,
        kind: str,
        body: Any,
        content_type: str | None,
        parents: Sequence[Version] | None,
    ) -> Change:
        """A local write naming a version this key already has: the same write again is a no-op
        (a client retrying), anything else is a VersionConflict."""
        found = entry.log.get(version)
        if found is not None:
            old = found[1]
            same = (old.kind, old.content_type) == (kind, content_type) and (
                parents is None or tuple(sorted(set(parents))) == old.parents
            )
            if same:
                probe = dataclasses.replace(old, body=body, sig=b"")
                same = encode_op(probe) == encode_op(dataclasses.replace(old, sig=b""))
            if same:
                return self._snapshot(key, entry)
        raise VersionConflict(f"version {version!r} of {key} already names another op")

    def _handled(self, op: Op) -> Op:
        """Run the ``to_save``/``to_delete`` handlers; a replacement op must stay on the same key,
        version and merge type (a handler transforms a write, it cannot redirect it)."""
        new = self.handlers.before_save(op)
        if (new.key, new.version, new.merge) != (op.key, op.version, op.merge):
            raise InvalidOp("a to_save handler may not change an op's key, version or merge type")
        return new

    # ------------------------------------------------------------------ remote ops

    def check_parents(self, key: Key, parents: Sequence[Version], version: Version | None = None) -> None:
        """Raise :class:`InvalidOp` unless every one of ``parents`` is a version this replica knows of
        ``key``: what a write made *here* must name (a local ``save``, a client's signed op). Ops
        replicated from peers are exempt (:meth:`apply`), since they may arrive before their
        parents. An op already stored (``version``) passes: resending it is a no-op.

        A client's write (the owner's ``Parents`` header, a delegate's signed op: both HTTP routes
        call this) on an ``lww`` key must also name its current frontier, else
        :class:`StaleParents` (:meth:`_check_current`). The Python API (``save(parents=…)``) still
        makes concurrent branches, as an embedding app or a test may mean to."""
        k = self.keys.parse_one(key)
        entry = self._entry(k)
        if version is not None and entry is not None and (version in entry.log or entry.log.folded(version)):
            return
        ps = tuple(sorted(set(parents)))
        self._check_parents(k, entry, ps)
        self._check_current(k, entry, ps)

    @staticmethod
    def _check_current(key: Key, entry: Entry | None, parents: tuple[Version, ...]) -> None:
        """A client's write on an ``lww`` key names the key's whole current frontier as its parents
        (sorted, no repeats): a write made on an older version would be a concurrent branch that
        either silently wins (the node's clock) or silently loses (the client's clock), so it is
        refused, the same for the owner and a delegate (docs/data-model.md). No parents named (an
        empty list) is not a claim: the write goes on top. CRDT keys merge concurrent updates, so
        any known parents do."""
        if entry is None or not parents or entry.merge != "lww":
            return
        frontier = entry.log.sorted_frontier()
        if parents != frontier:
            raise StaleParents(
                f"stale parents: {key} is now at {', '.join(frontier) or 'no version'}; "
                "read it again and write on its current version"
            )

    @staticmethod
    def _check_parents(key: Key, entry: Entry | None, parents: tuple[Version, ...]) -> None:
        if entry is None and parents:
            raise InvalidOp("unknown parents: this key has no history")
        if entry is not None and entry.log.ancestors(parents) is None:
            raise InvalidOp("unknown parents: not versions of this key")

    def apply(self, op: Op, *, peer: str | None = None, encoded: bytes | None = None) -> Change | None:
        """Apply an op that came from outside (a peer, a signed request). Returns None if this
        replica already had it. The verifier runs first; a rejected op changes nothing.
        ``encoded``: the op's canonical bytes, from a caller that proved them (the remote-op gate,
        ``statebus.access.op_gate``); the op is then not encoded and decoded again here."""
        if self.storage_refused is not None:
            self._refuse(local=False)
        k = parse_key(op.key, None, allow_subtree=False)
        if k != op.key:
            raise InvalidKey("an op's key must be in normal form")
        if self.reactive_keys.covers(k):
            raise DerivedKey(f"{k} is a derived key here: its value is computed, not written")
        if encoded is None:
            _canonical(op)
        entry = self._entry(k)
        if entry is not None:
            if op.merge != entry.merge:
                raise InvalidOp(f"{k} has merge type {entry.merge!r}, not {op.merge!r}")
            known = entry.log.get(op.version)
            if known is not None:
                if encode_op(dataclasses.replace(known[1], sig=b"")) != encode_op(
                    dataclasses.replace(op, sig=b"")
                ):
                    raise VersionConflict(f"version {op.version!r} of {k} already names another op")
                return None
            if entry.log.folded(op.version):
                return None  # folded into the base by compaction: seen already
            horizon = entry.state.horizon
            if horizon is not None and op.order <= horizon:
                return None  # sorts below the compacted base: seen already, or superseded
        if op.clock > (entry.log.clock if entry is not None else 0) + MAX_CLOCK_JUMP:
            raise InvalidOp(f"op clock {op.clock} is too far ahead of this key's history")
        state = entry.state if entry is not None else new_state(op.merge)
        if self.verifier is not None:
            self.verifier(op)
        if self.handlers:
            handled = self._handled(op)
            op = handled if handled is op else _canonical(handled)  # only a replaced op needs re-checking
        state.check_remote(op)  # it may be concurrent with this value: only the op itself is checked
        return self._commit(k, entry, state, op, peer)

    def _refuse(self, *, local: bool) -> None:
        if self.storage_refused is not None:
            raise StorageFailed(self.storage_refused)
        if local and self.local_refused is not None:
            raise StoreBehind(self.local_refused)

    # ------------------------------------------------------------------ commit and notify

    def _commit(self, key: Key, entry: Entry | None, state: MergeState, op: Op, peer: str | None) -> Change:
        outbox = self.outbox
        stable = outbox.stable
        if entry is None:
            if key not in stable:
                stable[key] = None  # its first op not durable yet: disk holds nothing (rule 5)
            entry = Entry(op.merge, state, OpLog(), None)
            self._entries[key] = entry
            before: tuple[Version, ...] = ()
        else:
            before = entry.log.sorted_frontier()
            if key not in stable:  # its first op not durable yet: keep what disk holds (rule 5)
                st = entry.state
                stable[key] = (entry.last_seq, st.exists, st.value, st.content_type, before, entry.merge)
        in_order = entry.state.apply(op)
        self._seq += 1
        seq = self._seq
        entry.log.add(op, seq)
        entry.last_seq = seq
        exists = entry.state.exists
        self._entries[key] = entry
        self._entries.move_to_end(key)
        self._evict()
        outbox.ops.append((seq, op, exists))
        outbox.fresh[key] = exists
        change = op_change(
            key,
            seq,
            exists,
            entry.state.value,
            entry.state.content_type,
            entry.log.sorted_frontier(),
            before,
            entry.merge,
            op,
            in_order and op.parents == before,
            peer,
        )
        self._notify(change)
        if len(entry.log) >= 2 * self.keep_ops:
            self.compact(key)
        return change

    def _notify(self, change: Change) -> None:
        self.subscriptions.deliver(change)
        if self.handlers:
            self.handlers.after_save(change)
        self._notify_derived(change.key)

    def _notify_derived(self, key: Key) -> None:
        for dkey, computed in self.reactive_keys.invalidated_by(key):
            self._notify(self._derived_change(dkey, computed))

    def _derived_change(self, key: Key, computed: Computed) -> Change:
        """The ``derived`` change of a derived key's value, its cursor the change that made it."""
        version = (f"derived-{computed.generation}",)
        return Change(key, computed.changed, "derived", computed.exists, computed.value, None, version, ())

    # ------------------------------------------------------------------ durability

    def take_outbox(self, batch_signer: BatchSigner | None = None) -> tuple[list[StoredOp], list[Snapshot]]:
        """Hand the ops (and compaction snapshots) waiting for disk to the caller, who must store
        them in this order and then call :meth:`mark_durable`. ``batch_signer`` may sign the ops
        as one commit, in place (the node's: the ops returned are the ones given) or as new ops,
        which then replace the unsigned ones in memory too."""
        items, snaps = self.outbox.take()
        ops = [op for _, op, _ in items]
        if batch_signer is not None and ops:
            signed_ops = batch_signer(ops)
            for signed, op in zip(signed_ops, ops, strict=True):
                if signed is op:
                    continue  # signed in place: the log already holds it
                entry = self._entries.get(signed.key)
                found = entry.log.get(signed.version) if entry else None
                if entry is not None and found is not None:
                    entry.log.add(signed, found[0])
            ops = signed_ops
        stored = [
            stored_op(seq, op.key, op.version, encode_op(op), exists)
            for (seq, _, exists), op in zip(items, ops, strict=True)
        ]
        if items:
            self._taken = items[-1][0]
        return stored, snaps

    @property
    def pending(self) -> int:
        return len(self.outbox)

    def mark_durable(self, seq: Seq) -> None:
        """Everything up to ``seq`` is on disk: listings and eviction may rely on storage now."""
        if seq > self._durable:
            self._durable = seq
            self.outbox.settle(seq, self._taken, self._seq, self._entries)
            self._evict()

    def rollback(self, keys: Iterable[Key] = ()) -> list[Key]:
        """Storage refused what was taken from the outbox: forget every change that is not durable.

        Drops the outbox and the queued snapshots, and evicts ``keys`` (those of the refused batch)
        and every cached entry holding an op past the durable cursor, so the next read loads the
        key's durable state from storage. Synchronous observers of those keys get a ``revert``
        change of that durable state (so a cache such as an access policy forgets what was dropped),
        and derived keys that read them are recomputed (and notified).
        Sequence numbers are not reused: the next change still gets a new one, and the durable
        cursor moves up to :attr:`seq` (the dropped numbers name no op). Returns the keys whose
        in-memory state was dropped.
        """
        dropped = set(keys) | self.outbox.drop()
        for key, entry in list(self._entries.items()):
            if key in dropped or entry.last_seq > self._durable:
                dropped.add(key)
                del self._entries[key]
        # Nothing up to the newest seq is waiting any more: the dropped seqs name no op, so the
        # durable cursor moves past them (a snapshot taken now, at ``seq``, is not held back).
        self._durable = self._taken = self._seq
        for key in sorted(dropped):
            self._revert(key)
        return sorted(dropped)

    def _revert(self, key: Key) -> None:
        """Tell the synchronous observers of ``key`` (an access policy, a cache) what it holds again
        after a rollback: a ``revert`` change of its durable state; then recompute derived keys."""
        try:
            entry = self._entry(key)
        except StatebusError:
            return  # a damaged store: the next read reports it
        if entry is not None:
            change = dataclasses.replace(self._snapshot(key, entry), kind="revert")
        else:
            change = Change(key, self._durable, "revert", False, None, None, (), ())
        self.subscriptions.deliver(change)
        self._notify_derived(key)

    def flush(self, batch_signer: BatchSigner | None = None) -> None:
        """Store everything pending, synchronously (plain code and tests; the runtime batches)."""
        stored, snaps = self.take_outbox(batch_signer)
        try:
            if stored:
                self.storage.append(stored)
            for snap in snaps:
                self.storage.compact(snap)
        except BaseException:
            self.rollback([op.key for op in stored] + [snap.key for snap in snaps])  # rule 5
            raise
        self.mark_durable(self._taken)

    def compact(self, key: str, keep: int | None = None) -> Snapshot | None:
        """Fold the oldest ops of ``key`` into its base snapshot, keeping ``keep`` (default
        ``keep_ops``) recent ones for resumes. Only ops already handed to storage are folded. The
        snapshot is queued for storage like an op."""
        k = self.parse(key, allow_subtree=False)
        entry = self._entry(k)
        if entry is None:
            return None
        snap = fold(k, entry, self._taken, self.keep_ops if keep is None else keep)
        if snap is not None:
            self.outbox.snapshots.append(snap)
        return snap

    def install(self, key: str, data: bytes) -> Change:
        """Put the owner's signed base ``data`` (a subtree snapshot's row) in place of everything
        this replica holds of another node's ``key`` (history rule 5); the snapshot is queued for
        storage like a compaction's. Subscribers get the key's new state as a ``snapshot`` change.
        An op it dropped may be applied again only once that snapshot is stored (storage still holds
        the op until then): ``Node.install_bases`` waits for it.

        A key this replica never held starts with the base (a new follower takes the snapshot
        before the ops).

        Raises:
            BadSnapshot: ``data`` is not a base of the key's merge type.
        """
        k = self.parse(key, allow_subtree=False)
        if namespace_of(k) == self.local:
            raise Forbidden("a node's own keys are never rebased on another node's snapshot")
        entry = self._entry(k)
        starts = entry is None
        if entry is None:
            try:
                merge = json.loads(data)["merge"]
                entry = Entry(merge, new_state(merge), OpLog(), None)
            except Exception:  # signed bytes from another node; any failure refuses them
                raise BadSnapshot(f"the base of {k} names no merge type this node knows") from None
            entry.last_seq = self._seq
        new = rebased(k, entry, data)
        self._entries[k] = new
        exists = new.state.exists if starts else None
        if starts:
            self.outbox.fresh[k] = new.state.exists
        self.outbox.snapshots.append(Snapshot(k, new.log.base_seq, encode_snapshot(new), exists))
        change = dataclasses.replace(self._snapshot(k, new), seq=self._seq, kind="snapshot")
        self.subscriptions.deliver(change)
        self._notify_derived(k)
        return change

    # ------------------------------------------------------------------ history and resume

    def history(self, key: str, parents: Sequence[Version]) -> list[Change]:
        """The changes a replica holding ``parents`` of ``key`` lacks, in order (per-key resume,
        as Braid's ``Parents`` asks). Raises HistoryCompacted when they were folded away."""
        k = self.parse(key, allow_subtree=False)
        return missing_versions(k, self._entry(k), parents)

    def knows(self, key: str, version: Version) -> bool:
        """Whether this replica holds (or folded) ``version`` of ``key``."""
        entry = self._entry(self.parse(key, allow_subtree=False))
        return entry is not None and entry.log.knows(version)

    def gap(self, key: str) -> str | None:
        """Why this replica cannot rebuild ``key`` from the ops it holds (its owner compacted
        history it never had), or None (``history.gap``)."""
        k = self.parse(key, allow_subtree=False)
        entry = self._entry(k)
        return None if entry is None else gap(k, entry)

    def fetch_version(self, key: str, versions: Sequence[Version], *, durable: bool = False) -> Change:
        """The state of ``key`` at the version frontier ``versions`` (history rule 4): the current
        state when they are its frontier. Raises NotFound or HistoryCompacted."""
        current = self.fetch_or_none(key, durable=durable)
        if current is None:
            raise NotFound(f"no value at {key}")
        if tuple(sorted(set(versions))) == tuple(sorted(current.version)):
            if not current.exists:
                raise NotFound(f"no value at {current.key} at that version")
            return current
        k = current.key
        if self.reactive_keys.get(k) is not None:
            raise HistoryCompacted(f"{k} is computed: only its current version is served")
        return state_at(k, self._entry(k), versions, self._durable if durable else None)

    def yjs_update(self, key: str, versions: Sequence[Version], *, durable: bool = False) -> bytes:
        """The Yjs document of ``key`` at the frontier ``versions`` (its current one, or a past one
        in its history) as one update (``history.yjs_update_at``). Raises NotAcceptable for a key
        that is not Yjs, NotFound or HistoryCompacted."""
        k = self.parse(key, allow_subtree=False)
        return yjs_update_at(k, self._entry(k), versions, self._durable if durable else None)

    def yjs_updates_after(self, key: str, parents: Sequence[Version], *, durable: bool = False) -> bytes:
        """The Yjs updates of ``key`` after the versions ``parents``, merged into one
        (``history.yjs_updates_after``)."""
        k = self.parse(key, allow_subtree=False)
        return yjs_updates_after(k, self._entry(k), parents, self._durable if durable else None)

    def history_page(
        self, key: str, after: Seq = 0, limit: int = 100, *, durable: bool = False
    ) -> HistoryPage:
        """The ops of ``key`` after cursor ``after``, oldest first, with its compaction horizon
        (with ``durable``, only the ops on disk)."""
        k = self.parse(key, allow_subtree=False)
        return history_page(k, self._entry(k), after, limit, self._durable if durable else None)

    def changes_since(self, pattern: str, after: Seq, limit: int = MAX_RESUME_OPS) -> list[Change]:
        """Every change to keys matching ``pattern`` (a key or a subtree) after cursor ``after``,
        in sequence order. Raises HistoryCompacted if some were compacted away (or if more than
        ``limit`` are missing: a fresh snapshot is cheaper then)."""
        p = self.parse(pattern)
        if after > self._seq:
            raise HistoryCompacted(f"cursor {after} is from the future of this node (at {self._seq})")
        if after < self.storage.horizon(p):
            raise HistoryCompacted(f"changes after cursor {after} were compacted")
        found = [*self.storage.scan(p, after, limit + 1), *self.outbox.waiting(p, after)]
        return missing_changes(found, self._entry, after, limit)

    # ------------------------------------------------------------------ subscriptions

    def observe(
        self,
        pattern: str,
        callback: Callback,
        *,
        since: Seq | None = None,
        parents: Sequence[Version] | None = None,
        snapshot: bool = True,
        max_snapshot_keys: int = 10_000,
        max_resume: int = MAX_RESUME_OPS,
    ) -> Subscription:
        """Watch a key or a subtree: ``callback`` gets the current state (unless ``snapshot`` is
        False), or the changes after cursor ``since`` / after versions ``parents`` (one key), then
        every change, in order, exactly once.

        Raises HistoryCompacted (before subscribing) when the resume point is gone, or when more
        than ``max_resume`` changes are missing after ``since``.
        """
        p = self.parse(pattern)
        if since is not None:
            backlog = self.changes_since(p, since, max_resume)
            for dkey, computed in self.reactive_keys.changed_since(p, since):
                backlog.append(self._derived_change(dkey, computed))
        elif parents is not None:
            if is_subtree(p):
                raise InvalidKey("parents name versions of one key, not of a subtree")
            backlog = self.history(p, parents)
        elif not snapshot:
            backlog = []
        elif is_subtree(p):
            keys = self.walk(p, max_snapshot_keys)
            backlog = [c for c in (self.fetch_or_none(k) for k in keys) if c is not None and c.exists]
            backlog = [dataclasses.replace(c, seq=self._seq, last=False) for c in backlog]
            backlog.append(Change(p, self._seq, "snapshot", False, None, None, (), (), last=True))
        else:
            snap = self.fetch_or_none(p)
            backlog = [
                dataclasses.replace(snap, seq=self._seq)
                if snap is not None
                else Change(p, self._seq, "snapshot", False, None, None, (), ())
            ]
        # changes made while the backlog is delivered (a callback may write) wait behind it
        queued: list[Change] = []
        sub = self.subscriptions.add(p, queued.append)
        pending = list(backlog)
        while pending and not sub.closed:
            for change in pending:
                if sub.closed:
                    break
                try:
                    callback(change)
                except Exception as exc:
                    sub.close(f"observer failed: {type(exc).__name__}: {exc}")
            pending, queued[:] = list(queued), []
        sub.callback = callback
        return sub

    # ------------------------------------------------------------------ handlers and reactive

    def handle(
        self,
        pattern: str,
        *,
        to_fetch: ToFetch | None = None,
        to_save: ToSave | None = None,
        to_delete: ToSave | None = None,
        on_save: OnSave | None = None,
    ) -> Handler:
        """Hook into reads and writes of keys matching ``pattern`` (see bus/handlers.py): a key, a
        subtree ``/ns/a/`` or a prefix ``/ns/a*``; ``/~/`` names the local namespace."""
        return self.handlers.add(Handler(self.parse(pattern), to_fetch, to_save, to_delete, on_save))

    def reactive(self, pattern: str, fn: ReactiveFn) -> None:
        """Make the keys matching ``pattern`` derived: their value is ``fn(key, get)``."""
        self.reactive_keys.add(self.parse(pattern), fn)

    def unreactive(self, pattern: str) -> None:
        """Undo :meth:`reactive` for ``pattern``: its keys are plain keys again."""
        self.reactive_keys.remove(self.parse(pattern))

    def refresh_derived(self, key: str) -> None:
        """Compute derived ``key`` again now (its function's inputs changed outside the bus: a
        hosted app's derive finished off the loop) and deliver a ``derived`` change if it changed."""
        k = self.parse(key, allow_subtree=False)
        computed = self.reactive_keys.refresh(k)
        if computed is not None:
            self._notify(self._derived_change(k, computed))

    def derived_inputs(self, key: Key) -> frozenset[Key] | None:
        """The keys the value of derived ``key`` was computed from (computed now if it was not yet),
        or None when ``key`` is not derived: what a reader must be allowed to read to see it."""
        if not self.reactive_keys.covers(key):
            return None
        computed = self.reactive_keys.get(key)
        return None if computed is None else frozenset(computed.deps)
