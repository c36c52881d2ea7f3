"""What the tests of a served champion share (the pipeline run itself is the ``demo_run``
fixture in conftest.py)."""

from __future__ import annotations

import pandas as pd
import pytest
from pyspark.sql import functions as F

from recsys.tables import read_table

def champion_cases(spark, cfg, users: int = 4):
    """Histories of ``users`` users (item ids and event types, as a served model takes them),
    the batch job's recommendations for them on the demo's run date, and a check that a
    served answer equals those: ``(frame, same)``."""
    from recsys.events import EVENT_TYPES

    k, run_date = cfg.scoring.top_k, "2026-11-01"
    ids = {r["item_idx"]: r["item_id"] for r in read_table(spark, cfg, "item_profiles").collect()}
    rows = (read_table(spark, cfg, "user_profiles").where(f"n_steps between 3 and {cfg.features.max_seq_len}")
            .orderBy("user_id").limit(users).collect())
    histories = {u["user_id"]: ([ids[i] for i in u["seq_item_idx"]], [EVENT_TYPES[t - 1] for t in u["seq_type_idx"]])
                 for u in rows}
    batch: dict = {}
    for r in (read_table(spark, cfg, "recommendations").where(f"run_date = DATE'{run_date}'")
              .where(F.col("user_id").isin(list(histories))).orderBy("user_id", "rank").collect()):
        batch.setdefault(r["user_id"], []).append((r["item_id"], r["reason_item_id"], r["score"]))
    assert sorted(batch) == sorted(histories) and all(len(v) == k for v in batch.values())

    def same(user: str, items, reasons, scores) -> None:
        assert list(items) == [b[0] for b in batch[user]], user
        assert list(reasons) == [b[1] for b in batch[user]], user
        want = [float("nan") if b[2] is None else b[2] for b in batch[user]]  # a fill row has no score
        assert list(scores) == pytest.approx(want, rel=1e-4, abs=1e-4, nan_ok=True)

    frame = pd.DataFrame({"user_id": list(histories), "item_ids": [h[0] for h in histories.values()],
                          "event_types": [h[1] for h in histories.values()]})
    return frame, same
