"""Build hook: compile the sans-IO core with mypyc at install time, or install it as pure Python.

``pip install .`` and ``pip install -e .`` compile the modules in :data:`COMPILED` to C extensions
(mypyc, which ships with mypy; the build needs a C compiler and the Python headers). Everything
else, and everything metadata, is in ``pyproject.toml``.

Rules:

1. The compiled modules are the same source files: nothing is written for mypyc alone, and every
   test passes on both builds (docs/development.md, "The compiled build").
2. ``STATEBUS_PURE=1`` in the environment of the build, or no working C compiler, installs pure
   Python: the build says so on stderr and succeeds. A failure halfway (one extension compiled, one
   not) drops every extension, so a build is all compiled or all pure, never mixed.
3. A module is listed only if it compiles and its tests pass compiled. Left out on purpose:
   ``oplog/events.py`` (an ``Op`` takes its parents as any sequence, which a compiled dataclass
   refuses before ``__post_init__`` sorts them), ``bus/changes.py`` (issue 16's "one object per
   write" builds a ``Change`` in a writable twin class and then assigns its ``__class__``, which a
   compiled class refuses), ``errors.py`` and ``types.py`` (class attributes that subclasses
   override; aliases only), and every module with I/O (async generators, which
   mypyc does not compile, and callers that patch them in tests).
4. The extensions land next to their ``.py`` files in an editable install (``pip install -e .``)
   and win over them on import; ``statebus/__init__.py`` refuses to import a compiled module older
   than its source (rebuild, or delete the ``.so`` files), so an edit is never silently ignored.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
COMPILED = [
    "statebus/keys/__init__.py",
    "statebus/keys/memo.py",
    "statebus/keys/paths.py",
    "statebus/values/__init__.py",
    "statebus/values/json.py",
    "statebus/values/ranges.py",
    "statebus/values/segments.py",
    "statebus/oplog/__init__.py",
    "statebus/oplog/codec.py",
    "statebus/oplog/log.py",
    "statebus/merge/__init__.py",
    "statebus/merge/base.py",
    "statebus/merge/lww.py",
    "statebus/merge/registry.py",
    "statebus/merge/yjs.py",
    "statebus/bus/__init__.py",
    "statebus/bus/bus.py",
    "statebus/bus/entry.py",
    "statebus/bus/handlers.py",
    "statebus/bus/history.py",
    "statebus/bus/outbox.py",
    "statebus/bus/reactive.py",
    "statebus/bus/reader.py",
    "statebus/bus/subscriptions.py",
]
"""The modules mypyc compiles, as paths from the project root."""
MYPY_FLAGS = ["--config-file=", "--no-site-packages", "--ignore-missing-imports", "--follow-imports=silent"]
"""mypyc type-checks what it compiles. Type errors are CI's ``mypy`` step (strict, with every dependency
installed). A build environment holds only the build requirements, so the build reads no installed
package (``--no-site-packages``: third-party types are ``Any``, and the strict config, which would
refuse that, is not read): the same sources compile to the same C in every environment.
"""
GROUP = "statebus"
"""mypyc's shared library is ``statebus__mypyc`` (top level, beside the package)."""


def say(message: str) -> None:
    print(f"statebus build: {message}", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """``build_ext`` that installs pure Python instead of failing when nothing can be compiled."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # CompileError, LinkError, a missing compiler or Python.h
            say(f"compiling failed ({type(exc).__name__}: {exc}); installing pure Python")
            self._drop_outputs()
            self.extensions = []

    def _drop_outputs(self) -> None:
        for ext in self.extensions:
            for path in (Path(self.get_ext_fullpath(ext.name)), ROOT / self.get_ext_filename(ext.name)):
                path.unlink(missing_ok=True)


BUILDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}
"""setup.py runs for metadata too (``egg_info``); only these commands need mypyc's ~10 s of analysis."""


def extensions() -> list[object]:
    if not BUILDS & set(sys.argv[1:]):
        return []
    if os.environ.get("STATEBUS_PURE", "") not in ("", "0"):
        say("STATEBUS_PURE is set: installing pure Python")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        say("mypyc is not installed (it comes with mypy): installing pure Python")
        return []
    return list(mypycify([*MYPY_FLAGS, *COMPILED], opt_level="3", group_name=GROUP))


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
