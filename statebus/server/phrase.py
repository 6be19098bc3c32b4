"""The recovery phrase of a node's identity, as a person is shown it: one text, one place.

    phrase_text(title, phrase)      the phrase with the one warning that goes with it
    show_phrase_on_terminal(...)    the ``on_new_identity`` hook of a node started by a person
    phrase_reminder(settings)       what each start says while a kept phrase waits for ``statebus phrase``

Rules:
    1. The phrase is written to a terminal or to the stdout of ``statebus init``/``statebus phrase``,
       never to a log, a pipe of a supervisor or an error message.
    2. Wherever it is shown, :data:`PHRASE_WARNING` follows it; no caller writes its own warning.
"""

from __future__ import annotations

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
