"""Yjs documents of every shared type, built by the real JS ``yjs`` package (tests/js/yjs_docs.mjs):
XML roots (ProseMirror, TipTap) have a JSON view, in any order of their updates."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from statebus.keys import encode_pubkey
from statebus.merge.yjs import YjsState
from statebus.oplog import Op
from tests.support.node_harness import yjs_available, yjs_updates

AUTHOR = encode_pubkey(b"\x01" * 32)

PROSEMIRROR = [
    {
        "nodeName": "heading",
        "attributes": {"level": "1"},
        "children": [{"delta": [{"insert": "Title"}]}],
    },
    {
        "nodeName": "paragraph",
        "attributes": {"textAlign": "left"},
        "children": [{"delta": [{"insert": "Hello "}, {"insert": "world", "attributes": {"bold": True}}]}],
    },
    {"nodeName": "paragraph", "attributes": {}, "children": [{"delta": [{"insert": "second"}]}]},
]


def op(n: int, update: bytes, parents: tuple[str, ...] = ()) -> Op:
    return Op("/k", f"v{n}", parents, AUTHOR, n, "yjs", "crdt", update)


def value_of(*ops: Op) -> Any:
    state = YjsState()
    for o in ops:
        state.check_remote(o)
        state.apply(o)
    return state.value


@pytest.mark.skipif(not yjs_available(), reason="needs node and the yjs package in tests/js")
def test_a_prosemirror_document_from_js_has_a_json_view_in_any_order() -> None:
    first, second = yjs_updates("prosemirror")
    in_order = value_of(op(1, first), op(2, second, ("v1",)))
    assert in_order == {"default": PROSEMIRROR}
    assert value_of(op(2, second, ("v1",)), op(1, first)) == in_order


def test_xml_inside_maps_and_arrays_and_formatted_text_never_raise() -> None:
    doc: Doc[Any] = Doc()
    meta = doc.get("meta", type=Map)
    items = doc.get("items", type=Array)
    rich = doc.get("rich", type=Text)
    with doc.transaction():
        meta["title"] = Text("t")
        meta["bytes"] = b"\x00\x01"
        meta["frag"] = XmlFragment([XmlElement("p", {"a": "b"}, [XmlText("x")])])
        items.append(XmlFragment([XmlText("loose")]))
        items.append(Map({"n": 1}))
        rich += "plain"
        rich.insert(5, " bold", {"bold": True})
    value = value_of(op(1, bytes(doc.get_update())))
    assert value["meta"] == {
        "title": "t",
        "bytes": "AAE=",
        "frag": [{"nodeName": "p", "attributes": {"a": "b"}, "children": [{"delta": [{"insert": "x"}]}]}],
    }
    assert value["items"] == [[{"delta": [{"insert": "loose"}]}], {"n": 1}]
    assert value["rich"] == "plain bold"
