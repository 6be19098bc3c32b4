"""``Op`` keeps its parents as a sorted tuple, whatever sequence it is given."""

from __future__ import annotations

import dataclasses

import pytest

from statebus.oplog.events import Op, fresh_op


def op(parents: object) -> Op:
    return Op("/k", "2-a", parents, "a", 2, "lww", "set", 1)  # type: ignore[arg-type]


def test_parents_become_a_sorted_tuple() -> None:
    assert op(["b", "a"]).parents == ("a", "b")
    assert op([]).parents == ()
    assert type(op([]).parents) is tuple
    assert op(["a"]).parents == ("a",) and type(op(["a"]).parents) is tuple
    assert op(("b", "a")).parents == ("a", "b")
    assert op(iter(["c", "a"])).parents == ("a", "c")


def test_a_short_tuple_is_kept_as_it_is() -> None:
    one = ("1-a",)
    assert op(one).parents is one
    assert op(()).parents == ()

    class Sub(tuple):  # type: ignore[type-arg]
        pass

    assert type(op(Sub(["a"])).parents) is Sub  # equal to its sorted tuple: kept, as before


def test_fresh_op_is_the_op_the_constructor_makes() -> None:
    """``fresh_op`` (the write path's cheap constructor) makes an Op equal to ``Op(...)``, with the
    same hash and repr, and as frozen."""
    args = ("/k", "2-x", ("1-a", "1-b"), "a" * 52, 2, "lww", "set", "v", None)
    made, plain = fresh_op(*args), Op(*args)
    assert type(made) is Op
    assert (made, hash(made), repr(made), made.sig) == (plain, hash(plain), repr(plain), b"")
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.body = "w"  # type: ignore[misc]
