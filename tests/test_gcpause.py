"""The collector's pause: off through overlapping bulk phases, on again after the last, never turned on
when something else had turned it off."""

from __future__ import annotations

import asyncio
import gc

from shared.gcpause import gc_paused


def test_the_collector_is_off_inside_and_on_after() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer phase still runs
    assert gc.isenabled()


async def test_overlapping_phases_share_one_pause() -> None:
    first_done, second_in = asyncio.Event(), asyncio.Event()
    seen: list[bool] = []

    async def first() -> None:
        with gc_paused():
            await second_in.wait()
        first_done.set()

    async def second() -> None:
        with gc_paused():
            second_in.set()
            await first_done.wait()
            seen.append(gc.isenabled())  # the first phase ended while this one runs
        seen.append(gc.isenabled())

    await asyncio.gather(first(), second())
    assert seen == [False, True]


def test_a_collector_turned_off_elsewhere_stays_off() -> None:
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_error_inside_still_ends_the_pause() -> None:
    try:
        with gc_paused():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()
