"""The recovery phrase of a node's identity, as a person is shown it: one text, one place.

    phrase_text(title, phrase)      the phrase with the one warning that goes with it
    framed(text)                    the same in a frame, so it stands out of a scrolling terminal
    show_phrase_last(settings, …)   ``statebus serve`` on a terminal: after the banner, framed, Enter
    show_phrase_on_terminal(...)    an ``on_new_identity`` hook that shows it at once (make_server)
    phrase_reminder(settings)       what each start says while a kept phrase waits for ``statebus phrase``

Rules:
    1. The phrase is written to a terminal or to the stdout of ``statebus init``/``statebus phrase``,
       never to a log, a pipe of a supervisor or an error message.
    2. Wherever it is shown, :data:`PHRASE_WARNING` follows it; no caller writes its own warning.
    3. ``statebus serve`` shows it last, below uvicorn's lines and the banner, where it does not
       scroll away, and waits for Enter when standard input is a terminal too (``--yes``: no wait).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys

from statebus.config import Settings
from statebus.identity import keystore
from statebus.identity.keys import Identity

PHRASE_WARNING = (
    "This recovery phrase is shown ONCE: no copy is kept (one waiting in the data folder is deleted\n"
    "now). Write it down and keep it secret: anyone who has it can act as this node.\n"
    "`statebus init --recover` restores the identity from it."
)


def phrase_text(title: str, phrase: str) -> str:
    """``title``, the phrase indented on a line of its own, and :data:`PHRASE_WARNING`."""
    return f"{title}\n\n    {phrase}\n\n{PHRASE_WARNING}\n"


ENTER_PROMPT = "Press Enter once the phrase is written down (the node serves from then on). "


FRAME = "=" * 78


def framed(text: str) -> str:
    """``text`` between two rules of ``=`` (ASCII, 78 wide: any terminal shows it unwrapped; the
    phrase's line is not cut or padded, so it is copied whole)."""
    return f"{FRAME}\n{text.rstrip()}\n{FRAME}\n"


def phrase_may_wait(confirm: bool = True) -> bool:
    """Whether :func:`show_phrase_last` may wait for Enter at this start: ``confirm`` and both
    standard input and standard error are terminals (the identity may not exist yet)."""
    return confirm and sys.stderr.isatty() and sys.stdin.isatty()


async def show_phrase_last(settings: Settings, stop: asyncio.Event, *, confirm: bool = True) -> bool:
    """Show the phrase of a new identity on the terminal after everything else a start prints,
    framed, then (``confirm``, and standard input a terminal) wait for Enter or ``stop``.

    Only when standard error is a terminal and a phrase waits in the data folder; it is deleted once
    shown. Returns whether it was shown (else the caller prints :func:`phrase_reminder`)."""
    if not sys.stderr.isatty() or not keystore.phrase_pending(settings.data_dir):
        return False
    pubkey = keystore.load(settings.data_dir).pubkey
    phrase = keystore.take_phrase(settings.data_dir)
    sys.stderr.write("\n" + framed(phrase_text(f"Created node identity {pubkey}.", phrase)))
    if not confirm or not sys.stdin.isatty():
        sys.stderr.flush()
        return True
    sys.stderr.write(ENTER_PROMPT)
    sys.stderr.flush()
    await _enter_or(stop)
    sys.stderr.write("\n")
    sys.stderr.flush()
    return True


async def _enter_or(stop: asyncio.Event) -> None:
    """Wait for a line on standard input (read without a thread: Ctrl-C must not hang on it)."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    entered = asyncio.Event()

    def readable() -> None:
        data = os.read(fd, 4096)
        if not data or b"\n" in data or b"\r" in data:
            entered.set()

    loop.add_reader(fd, readable)
    try:
        waits = [asyncio.ensure_future(entered.wait()), asyncio.ensure_future(stop.wait())]
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
    finally:
        loop.remove_reader(fd)


def show_phrase_on_terminal(identity: Identity, phrase: str) -> bool:
    """The ``on_new_identity`` of a node started by a person: the phrase goes to stderr only when
    stderr is a terminal (never into a log file or a pipe). Returns whether it was shown."""
    if not sys.stderr.isatty():
        return False
    sys.stderr.write(phrase_text(f"Created node identity {identity.pubkey}.", phrase) + "\n")
    sys.stderr.flush()
    return True


def phrase_reminder(settings: Settings) -> str | None:
    """What to tell the owner at start while a recovery phrase waits to be shown, or None."""
    if not keystore.phrase_pending(settings.data_dir):
        return None
    data = shlex.quote(str(settings.data_dir))
    return (
        f"statebus: the recovery phrase of this node's identity has not been shown yet (there was no "
        f"terminal when it was made). Run `statebus phrase --data {data}` in a terminal to see it once; "
        f"until then it is kept in {keystore.phrase_file(settings.data_dir)} (mode 0600).\n"
    )
