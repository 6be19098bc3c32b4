from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statebus.errors import InvalidRange
from statebus.values import MAX_RANGE_CHARS, MAX_RANGE_DEPTH, Field, Index, Slice, format_range, parse_range

# --- parse_range -----------------------------------------------------------------------------

PARSES = [
    ("", ()),
    (".a", (Field("a"),)),
    (".a.b", (Field("a"), Field("b"))),
    ("a.b", (Field("a"), Field("b"))),
    ("messages[1:1]", (Field("messages"), Slice(1, 1))),
    ("[3]", (Index(3),)),
    ("[-1]", (Index(1, from_end=True),)),
    ("[-0]", (Index(0, from_end=True),)),
    (".a[0][2]", (Field("a"), Index(0), Index(2))),
    ('["quoted key"]', (Field("quoted key"),)),
    ('["a.b[c]"]', (Field("a.b[c]"),)),
    ('["esc\\"\\u00e9\\n"]', (Field('esc"é\n'),)),
    ('[""]', (Field(""),)),
    (".x[1:3]", (Field("x"), Slice(1, 3))),
    ("[-2:-0]", (Slice(2, 0, True, True),)),
    ("[0:-1]", (Slice(0, 1, False, True),)),
    (".über", (Field("über"),)),
    (".my-field", (Field("my-field"),)),
    (".3", (Field("3"),)),
    ("/a/b/3", (Field("a"), Field("b"), Field("3"))),
    ("/", (Field(""),)),
    ("/a~1b/c~0d/~01", (Field("a/b"), Field("c~d"), Field("~1"))),
    ("/a//b", (Field("a"), Field(""), Field("b"))),
    ("/with space/[x]", (Field("with space"), Field("[x]"))),
]


@pytest.mark.parametrize(("text", "expected"), PARSES)
def test_parse_range(text: str, expected: tuple[object, ...]) -> None:
    assert parse_range(text) == expected


BAD_RANGES = [
    (".", "empty field name at position 1"),
    (".a.", "empty field name at position 3"),
    ("..a", "empty field name at position 1"),
    (".a..b", "empty field name at position 3"),
    (".a[", "after '[' at position 2"),
    ("[]", "after '[' at position 0"),
    ("[x]", "after '[' at position 0"),
    ("[1", "after '[' at position 0"),
    ("[1:]", "after '[' at position 0"),
    ("[:1]", "after '[' at position 0"),
    ("[ 1]", "after '[' at position 0"),
    ("[1]x", "expected '.' or '[' at position 3"),
    ("[1]]", "expected '.' or '[' at position 3"),
    ('["a"', "expected ']' at position 4"),
    ('["a"x]', "expected ']' at position 4"),
    ('["a', "bad quoted field name at position"),
    ('["\\x"]', "bad quoted field name at position"),
    ('["\\ud800"]', "lone surrogate"),
    ('["a\tb"]', "bad quoted field name"),
    (".a b", "contains ' ' at position 2"),
    (" .a", "contains ' ' at position 0"),
    (".a\x00", "contains '\\x00' at position 2"),
    ("[1:2].a", "slice [i:j] must be the last segment; more follows at position 5"),
    ("[1:2][0]", "must be the last segment"),
    ("[1234567890123456]", "more than 15 digits"),
    ("/a~2", "'~' must be followed by 0 or 1 at position 2"),
    ("/a/b~", "at position 4"),
]


@pytest.mark.parametrize(("text", "reason"), BAD_RANGES)
def test_parse_range_rejects(text: str, reason: str) -> None:
    with pytest.raises(InvalidRange) as info:
        parse_range(text)
    assert reason in info.value.detail


def test_parse_range_limits() -> None:
    parse_range(".a" * (MAX_RANGE_DEPTH))
    with pytest.raises(InvalidRange, match="more than 64 segments"):
        parse_range(".a" * (MAX_RANGE_DEPTH + 1))
    with pytest.raises(InvalidRange, match="more than 64 segments"):
        parse_range("/a" * (MAX_RANGE_DEPTH + 1))
    with pytest.raises(InvalidRange, match="limit is 1024"):
        parse_range("." + "a" * MAX_RANGE_CHARS)
    with pytest.raises(InvalidRange, match="not bytes"):
        parse_range(b".a")  # type: ignore[arg-type]


def test_format_range() -> None:
    assert format_range(()) == ""
    assert format_range(parse_range('.a["b c"][-1]')) == '.a["b c"][-1]'
    assert format_range([Field("3"), Field(""), Slice(0, 2, False, True)]) == '["3"][""][0:-2]'


def test_segment_validation() -> None:
    with pytest.raises(InvalidRange):
        Index(-1)
    with pytest.raises(InvalidRange):
        Slice(0, -2)


_small = st.integers(0, 99)
_segments = st.lists(
    st.one_of(
        st.builds(Field, st.text(max_size=6)),
        st.builds(Index, st.integers(0, 10**6), st.booleans()),
    ),
    max_size=6,
).flatmap(
    lambda segs: (
        st.just(segs)
        | st.builds(
            lambda s: [*segs, s],
            st.builds(Slice, st.integers(0, 99), st.integers(0, 99), st.booleans(), st.booleans()),
        )
    )
)


@settings(deadline=None)
@given(_segments)
def test_format_then_parse_round_trips(segments: list[object]) -> None:
    text = format_range(segments)  # type: ignore[arg-type]
    assert parse_range(text) == tuple(segments)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.printable + "é\u2028\ud800", max_size=40) | st.text(max_size=40))
def test_parse_never_raises_anything_but_invalid_range(text: str) -> None:
    try:
        parse_range(text)
    except InvalidRange:
        pass
