"""Progress lines a person reads: one line per finished phase of the work after training, with
its time, so a long scoring or logging step is never silent. Lines go to stdout, flushed, so they
appear in order in a log file as on a terminal."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


def say(message: str) -> None:
    print(message, file=sys.stdout, flush=True)


class Phases:
    """Times the named phases of one piece of work: ``with phases.step("figures"): ...`` prints
    ``after training: figures 2.1 s (14.3 s in all)`` when the step ends."""

    def __init__(self, title: str = "after training"):
        self.title = title
        self.start = time.perf_counter()
        self.times: dict[str, float] = {}

    @contextmanager
    def step(self, name: str):
        began = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - began
            self.times[name] = self.times.get(name, 0.0) + took
            say(f"{self.title}: {name} {took:.1f} s ({time.perf_counter() - self.start:.1f} s in all)")

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


_current: Phases | None = None


@contextmanager
def phases(title: str = "after training"):
    """The phases of the work inside the ``with``: :func:`step` times into them."""
    global _current
    outer, _current = _current, Phases(title)
    try:
        yield _current
    finally:
        _current = outer


@contextmanager
def step(name: str):
    """One timed phase of the current :func:`phases`; silent outside one (tests, library use)."""
    if _current is None:
        yield
        return
    with _current.step(name):
        yield
