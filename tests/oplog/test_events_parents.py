"""``Op`` keeps its parents as a sorted tuple, whatever sequence it is given."""

from __future__ import annotations

from statebus.oplog.events import Op


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
