"""``statebus.http.pump``: the one place a coroutine is driven by hand, and the log filter that is
installed at start-up, not at import."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import pytest

from statebus.http.pump import ABANDONED, drive, install_log_filter


async def _answer() -> int:
    return 42


async def _fails() -> None:
    raise ValueError("boom")


def test_a_coroutine_that_does_not_wait_ends_in_one_step() -> None:
    async def main() -> tuple[bool, object]:
        return drive(_answer(), lambda _: None)

    assert asyncio.run(main()) == (True, 42)


def test_a_waiting_coroutine_is_resumed_from_its_future_and_ends_with_its_result() -> None:
    async def main() -> list[object]:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        log: list[object] = []

        async def waits() -> str:
            return await fut

        coro = waits()
        ended = asyncio.get_running_loop().create_future()

        def step(_: object = None) -> None:
            done, value = drive(coro, step)
            log.append((done, value if done else type(value).__name__))
            if done:
                ended.set_result(None)

        step()
        fut.set_result("ok")
        await ended
        return log

    assert asyncio.run(main()) == [(False, "Future"), (True, "ok")]


def test_what_the_coroutine_raises_reaches_the_caller() -> None:
    async def main() -> None:
        drive(_fails(), lambda _: None)

    with pytest.raises(ValueError, match="boom"):
        asyncio.run(main())


def test_importing_the_streaming_code_leaves_logging_alone() -> None:
    code = (
        "import logging, statebus.http.subscribe, statebus.http.app\n"
        "print(len(logging.getLogger('uvicorn.error').filters))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def test_the_log_filter_is_installed_once() -> None:
    logger = logging.getLogger("uvicorn.error")
    install_log_filter()
    install_log_filter()
    assert logger.filters.count(ABANDONED) == 1
