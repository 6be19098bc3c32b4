"""Run a doc's shell blocks as written and compare what each command prints with the doc.

A doc shows a command's output as comment lines right under it. docs/devnet.md indents them past the
``#`` (``#   {"text": "second"}``: three or more spaces; a plain ``# comment`` is prose,
:data:`INDENTED`); the README's tour blocks hold no prose, so every comment line under a command is
its output there (:data:`ANY_COMMENT`; a bare ``#`` is an empty line).
:func:`commands` pairs each command with those lines; :func:`instrument` wraps every command that
shows output in markers, so one ``bash`` runs the whole walkthrough (variables carry over) and
:func:`outputs` cuts its stdout back into one piece per command.

What must vary from run to run is normalised, the same way on both sides (:func:`normalise`), and
nothing else:

1. a pubkey (52 base32 characters), or one shown abbreviated as ``oathcj…ypaa``, is ``<pubkey>``;
2. a port of 127.0.0.1 is ``<port>``, a ``pid 123`` is ``pid <pid>``, a devnet name's hex is ``<hex>``,
   a version number (``0.1.0``) is ``<version>``;
3. any other ``…`` in the doc stands for the rest of one token (a version id's hash, a token):
   it matches a run of characters without spaces, quotes, slashes, commas or brackets;
4. runs of spaces count as one (column widths follow the width of a pid);
5. ``strip_reason``, for ``statebus peers`` lines: the text in parentheses at the end (the last error,
   which changes while a follower retries) is dropped, and the ``applied N`` counter is not
   compared (a follower stores its counters at most once a second, so a line read just as the
   follow turns live may count one batch less).
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"```(\w*)\n(.*?)```", re.DOTALL)
START, END = "@@doc-command-start@@", "@@doc-command-end@@"

_PUBKEY = re.compile(r"\b[a-z2-7]{52}\b")
_ABBREVIATED = re.compile(r"\b[a-z2-7]{3,8}…[a-z2-7]{3,8}\b")
_PORT = re.compile(r"127\.0\.0\.1:\d+")
_PID = re.compile(r"\bpid \d+")
_HEX = re.compile(r"devnet-[0-9a-f]{6}\b")
_SEMVER = re.compile(r"(?<![\d.])\d+\.\d+\.\d+(?![\d.])")
_REASON = re.compile(r"\s+\([^()]*(\([^()]*\)[^()]*)*\)$")


def blocks(doc: Path, lang: str) -> list[str]:
    """The fenced blocks of ``doc`` in language ``lang`` ("" for a bare fence), in order."""
    return [body for tag, body in FENCE.findall(doc.read_text(encoding="utf-8")) if tag == lang]


@dataclass
class Command:
    text: str
    """The command as written (continuation lines joined, comments kept)."""
    expected: list[str]
    """The output lines the doc shows under it (empty: the doc shows none)."""


INDENTED = re.compile(r"^#\s{3,}(.*)$")
ANY_COMMENT = re.compile(r"^#(?: (.*))?$")


def commands(script: str, output: re.Pattern[str] = INDENTED) -> list[Command]:
    """Every command of ``script`` with the output lines the doc shows under it (``output`` picks
    them out of the comment lines and captures their text)."""
    out: list[Command] = []
    pending: list[str] = []
    for line in script.splitlines():
        if pending and pending[-1].endswith("\\"):
            pending.append(line)
            continue
        if pending:
            out.append(Command("\n".join(pending), []))
            pending = []
        stripped = line.strip()
        shown = output.match(stripped)
        if shown and out:
            out[-1].expected.append(shown.group(1) or "")
        elif stripped and not stripped.startswith("#"):
            pending = [line]
    if pending:
        out.append(Command("\n".join(pending), []))
    return out


def instrument(cmds: list[Command]) -> str:
    """One script: every command that shows output is wrapped in markers on stdout."""
    lines = []
    for cmd in cmds:
        if cmd.expected:
            lines += [f"echo {START}", cmd.text, f"printf '\\n%s\\n' {END}"]  # output need not end a line
        else:
            lines.append(cmd.text)
    return "\n".join(lines) + "\n"


def outputs(stdout: str) -> list[list[str]]:
    """What each wrapped command printed, in order."""
    found = re.findall(rf"{START}\n(.*?)\n{END}\n", stdout, flags=re.DOTALL)
    return [_trim(chunk.splitlines()) for chunk in found]


def _trim(lines: list[str]) -> list[str]:
    """Without the empty lines at the end (curl's JSON has no newline; SSE blocks end with one)."""
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def normalise(line: str, *, strip_reason: bool = False) -> str:
    """A line of real or documented output with what must vary replaced (rules 1, 2, 4, 5)."""
    line = _ABBREVIATED.sub("<pubkey>", line)
    line = _PUBKEY.sub("<pubkey>", line)
    line = _PORT.sub("127.0.0.1:<port>", line)
    line = _PID.sub("pid <pid>", line)
    line = _HEX.sub("devnet-<hex>", line)
    line = _SEMVER.sub("<version>", line)
    line = re.sub(r" +", " ", line.strip())
    if strip_reason:
        line = re.sub(r"\bapplied \d+\b", "applied <n>", _REASON.sub("", line))
    return line


def matches(expected: str, actual: str, *, strip_reason: bool = False) -> bool:
    """Whether ``actual`` is the documented line ``expected`` (rule 3: ``…`` ends one token)."""
    want = normalise(expected, strip_reason=strip_reason)
    got = normalise(actual, strip_reason=strip_reason)
    pattern = "".join(r"[^\s\"/,\[\]]+" if part == "…" else re.escape(part) for part in re.split("(…)", want))
    return re.fullmatch(pattern, got) is not None


def compare(cmds: list[Command], printed: list[list[str]], *, strip_reason: bool = False) -> list[str]:
    """The differences between what the doc shows and what ran (empty: the doc is right)."""
    shown = [cmd for cmd in cmds if cmd.expected]
    problems = []
    if len(printed) != len(shown):
        problems.append(f"{len(shown)} commands show output, {len(printed)} ran to the end")
    for cmd, got in zip(shown, printed, strict=False):
        expected = _trim(list(cmd.expected))
        ok = len(got) == len(expected) and all(
            matches(e, a, strip_reason=strip_reason) for e, a in zip(expected, got, strict=True)
        )
        if not ok:
            problems.append(f"{cmd.text.strip()}\n  doc:  {expected}\n  real: {got}")
    return problems


CTRL_C = "Ctrl-C to stop"
CTRL_C_AFTER = 6.0  # a loaded machine took over 2 s to start the CLI and print the snapshot


def stop_live_commands(cmds: list[Command], seconds: float = CTRL_C_AFTER) -> list[Command]:
    """A command whose comment says "Ctrl-C to stop" gets Ctrl-C (SIGINT) after ``seconds``, as a
    reader would press it: ``{ timeout -s INT 6 <command>\\n} || true``."""
    return [
        Command(f"{{ timeout -s INT {seconds:g} {c.text}\n}} || true", c.expected) if CTRL_C in c.text else c
        for c in cmds
    ]


def statebus_on_path(directory: Path) -> Path:
    """A ``statebus`` executable in ``directory`` that runs this interpreter's ``-m statebus`` (the
    tree under test, whatever console script the machine has); put ``directory`` first on PATH."""
    directory.mkdir(parents=True, exist_ok=True)
    shim = directory / "statebus"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m statebus "$@"\n')
    shim.chmod(0o755)
    return directory


def run_bash(script: str, *, env: dict[str, str], cwd: Path, log: Path, timeout: float) -> tuple[int, str]:
    """Run ``script`` (``set -euo pipefail`` first) in bash; return its status and stdout. stderr goes
    to ``log`` (a file, not a pipe: a background process the script starts keeps it open)."""
    with log.open("w") as stderr:
        done = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            cwd=cwd,
            timeout=timeout,
        )
    return done.returncode, done.stdout
