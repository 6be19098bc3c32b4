"""Summaries of py-spy's collapsed stacks (``--format raw``): where the samples went.

Each line of the input is ``frame;frame;…;leaf count``; a frame is ``function (file:line)``. The
summary lists the functions with the most samples at the top of the stack (self) and anywhere in
it (total), as percentages of all samples.
"""

from __future__ import annotations

import re
from collections import Counter

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(.*?) \((.*?)(?::\d+)?\)$")


def _name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip()
    func, path = m.group(1), m.group(2)
    for marker in ("site-packages/", "statebus/", "bench/", "lib/python3"):
        i = path.find(marker)
        if i >= 0:
            path = path[i:]
            break
    return f"{func} ({path})"


def summarize(collapsed: str, top: int = 40) -> str:
    """The top ``top`` functions by self and by total samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        m = _LINE.match(line.strip())
        if m is None:
            continue
        count = int(m.group(2))
        frames = [_name(f) for f in m.group(1).split(";") if f]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    if not samples:
        return "no samples\n"
    out = [f"{samples} samples", "", "self%  function"]
    out += [f"{100 * n / samples:5.1f}  {name}" for name, n in own.most_common(top)]
    out += ["", "total% function"]
    out += [f"{100 * n / samples:5.1f}  {name}" for name, n in total.most_common(top)]
    return "\n".join(out) + "\n"
