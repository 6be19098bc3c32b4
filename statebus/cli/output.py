"""How the commands write: standard output flushed line by line, also into a pipe or a file."""

from __future__ import annotations

from typing import TextIO


def line_buffered(stream: TextIO) -> None:
    """Flush ``stream`` at every newline, also when it is a pipe or a file (Python block-buffers
    those): what a supervisor or a test reads must arrive as it is printed, not at exit."""
    reconfigure = getattr(stream, "reconfigure", None)
    if callable(reconfigure):
        reconfigure(line_buffering=True)
