"""The step timer behind the ingest and profiles reports' ``step_seconds``."""

from __future__ import annotations

import time

from recsys.timing import StepTimer


def test_each_step_gets_the_time_since_the_previous_one_and_repeats_add_up():
    t = StepTimer()
    time.sleep(0.05)
    t.done("a")
    time.sleep(0.02)
    t.done("b")
    time.sleep(0.03)
    t.done("a")
    assert list(t.seconds) == ["a", "b"]
    assert 0.07 <= t.seconds["a"] < 0.5  # 0.05 + 0.03, not just the last 0.03
    assert 0.02 <= t.seconds["b"] < t.seconds["a"]
