"""EventLoop: descriptor dispatch, timers, deferred work, suspension, busy-poll."""

from __future__ import annotations

import os
import time

from passt.loop import EVENT_READ, EventLoop


def readable_pipe() -> tuple[int, int]:
    r, w = os.pipe()
    os.write(w, b"x")  # stays readable: nobody reads it
    return r, w


def test_suspend_pauses_a_ready_descriptor_then_resumes() -> None:
    loop = EventLoop()
    r, w = readable_pipe()
    calls: list[float] = []
    try:
        loop.register(r, EVENT_READ, lambda _m, now: calls.append(now))
        loop.run_once(0)
        assert len(calls) == 1
        t0 = time.monotonic()
        assert loop.suspend(r, 0.1)
        assert loop.is_suspended(r) and loop.is_registered(r)
        assert loop.registered_count == 1
        while time.monotonic() - t0 < 0.05:
            loop.run_once(0.01)
        assert len(calls) == 1  # level-triggered and ready, but paused
        while len(calls) == 1 and time.monotonic() - t0 < 1:
            loop.run_once(0.2)
        assert len(calls) >= 2
        assert calls[1] - t0 >= 0.09
        assert not loop.is_suspended(r)
    finally:
        loop.close()
        os.close(r)
        os.close(w)


def test_unregister_while_suspended_cancels_resume() -> None:
    loop = EventLoop()
    r, w = readable_pipe()
    calls: list[float] = []
    try:
        loop.register(r, EVENT_READ, lambda _m, now: calls.append(now))
        assert loop.suspend(r, 0.02)
        loop.unregister(r)
        assert not loop.is_registered(r) and loop.registered_count == 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.1:
            loop.run_once(0.01)
        assert calls == []
        assert not loop.is_registered(r)
    finally:
        loop.close()
        os.close(r)
        os.close(w)


def test_suspend_unknown_descriptor_is_false() -> None:
    loop = EventLoop()
    r, w = os.pipe()
    try:
        assert not loop.suspend(r, 0.1)
        assert not loop.is_suspended(r)
    finally:
        loop.close()
        os.close(r)
        os.close(w)


def test_timers_and_deferred_run_in_order() -> None:
    loop = EventLoop()
    seen: list[str] = []
    try:
        loop.call_later(0.0, lambda _n: seen.append("timer"))
        t = loop.call_later(0.0, lambda _n: seen.append("cancelled"))
        loop.cancel(t)
        loop.defer(lambda _n: seen.append("deferred"))
        loop.run_once(0.01)
        assert seen == ["timer", "deferred"]
    finally:
        loop.close()


def test_busy_poll_is_bounded_when_idle() -> None:
    """After a busy turn the loop polls briefly, then blocks: an idle loop burns (almost) no CPU."""
    loop = EventLoop()
    r, w = os.pipe()
    try:
        loop.register(r, EVENT_READ, lambda _m, _now: None if os.read(r, 1) else None)
        os.write(w, b"x")
        loop.run_once(0)  # a turn that did work: the next one may spin first
        cpu0, t0 = time.process_time(), time.monotonic()
        loop.run_once(0.2)
        elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
        assert elapsed >= 0.15  # nothing happened: it waited for the timeout
        assert cpu < 0.05  # ... mostly blocked in select, not spinning
    finally:
        loop.close()
        os.close(r)
        os.close(w)


def test_busy_poll_catches_an_event_after_a_busy_turn() -> None:
    """An event arriving right after a busy turn is dispatched in the next turn."""
    loop = EventLoop()
    r, w = os.pipe()
    seen: list[bytes] = []
    try:
        loop.register(r, EVENT_READ, lambda _m, _now: seen.append(os.read(r, 1)))
        os.write(w, b"a")
        loop.run_once(0)
        os.write(w, b"b")
        loop.run_once(0.5)
        assert seen == [b"a", b"b"]
    finally:
        loop.close()
        os.close(r)
        os.close(w)


def test_stop_before_run_is_not_lost() -> None:
    """A SIGTERM handled before the loop starts (stop() first) still ends run() at once."""
    loop = EventLoop()
    fired: list[float] = []
    loop.call_later(0.0, fired.append)
    loop.stop()
    loop.run()  # would spin forever if the early stop() were forgotten
    assert fired == []
    loop.close()
