"""Training examples: the leave-one-out split (README, "Evaluation protocol") over a user's steps.

The last step is the test target, the one before it the validation target (for a fixed hash
sample of users, ``validation_user``), the rest is training.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recsys.config import Config

SPLITS = ("train", "validation", "test")


def build_training_examples(cfg: Config, profiles: DataFrame) -> DataFrame:
    """Leave-one-out examples, one row per (user, split), all arrays of length ``max_seq_len``.

    * train: inputs = steps[1 .. n-3], targets = steps[2 .. n-2] (next-item at every position)
    * validation: inputs = steps[1 .. n-2], target = step n-1
    * test: inputs = steps[1 .. n-1], target = step n
    ``history_items`` (variable length) lists every item before the target, for masking.

    With ``features.validation_share`` < 1, only that share of users (a fixed hash sample)
    keeps its step n-1 as a validation target; for everyone else step n-1 becomes one more
    training target (inputs steps[1 .. n-2], targets steps[2 .. n-1]) and there is no
    validation row. The test target is never trained on.
    """
    L = cfg.features.max_seq_len
    p = profiles.where(F.col("n_steps") >= cfg.features.min_interactions).select(
        "user_id", "seq_item_idx", "seq_type_idx", F.col("n_steps").alias("n"),
        validation_user(cfg.features.validation_share).alias("_holdout"),
    )
    n = F.col("n")
    n_train = F.when(F.col("_holdout"), n - 3).otherwise(n - 2)

    def head(c: str, k: Column) -> Column:
        return F.slice(F.col(c), 1, k)

    def row(split: str, n_in: Column, targets: Column, target: Column) -> DataFrame:
        return p.select(
            "_holdout",
            "user_id",
            F.lit(split).alias("split"),
            _last_padded(head("seq_item_idx", n_in), L).alias("input_items"),
            _last_padded(head("seq_type_idx", n_in), L).alias("input_types"),
            targets.alias("target_items"),
            target.cast("int").alias("target"),
            F.array_distinct(head("seq_item_idx", n_in)).alias("history_items"),
        )

    zeros = F.array_repeat(F.lit(0), L)
    train = row("train", n_train, _last_padded(F.slice(F.col("seq_item_idx"), 2, n_train), L), F.lit(0)).where(
        F.size(F.array_remove("input_items", 0)) >= 1
    )
    valid = row("validation", n - 2, F.concat(F.slice(zeros, 1, L - 1), F.array(F.element_at("seq_item_idx", n - 1))),
                F.element_at("seq_item_idx", n - 1)).where(F.col("_holdout"))
    test = row("test", n - 1, F.concat(F.slice(zeros, 1, L - 1), F.array(F.element_at("seq_item_idx", n))),
               F.element_at("seq_item_idx", n))
    return train.unionByName(valid).unionByName(test).drop("_holdout")


def validation_user(share: float) -> Column:
    """True for the fixed hash sample of users (``share`` of them) that keep a validation target."""
    return F.pmod(F.xxhash64("user_id"), F.lit(10_000)) < F.lit(int(round(share * 10_000)))


def _last_padded(arr: Column, length: int) -> Column:
    """The last ``length`` elements of ``arr``, left-padded with 0 to exactly ``length``."""
    tail = F.when(F.size(arr) > length, F.slice(arr, F.size(arr) - length + 1, length)).otherwise(arr)
    return F.concat(F.array_repeat(F.lit(0), F.lit(length) - F.size(tail)), tail)
