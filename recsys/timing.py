"""Wall seconds per named step of a run, for its report (where does a run spend its time?)."""

from __future__ import annotations

import time


class StepTimer:
    """``done(name)`` records the seconds since the previous ``done`` (or since creation)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.time()

    def done(self, name: str) -> None:
        now = time.time()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._t, 2)
        self._t = now
