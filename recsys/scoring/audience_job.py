"""``recsys audiences``: for an item, a category or a brand, the users most likely to engage
with it next, scored by the registered model (:mod:`recsys.scoring.audiences`: the model's
probability that the user's next item is in the target's set of items), written to the gold
``audiences`` table with a reason a marketer can read.

The targets are ``--item`` / ``--category`` / ``--brand`` on the command line, else
``audiences.targets`` from config, else the ``audiences.auto_items`` most popular items and the
``audiences.auto_categories`` largest top-level categories. A category covers every category
below it. An item's audience leaves out the users who already bought it
(``audiences.exclude_buyers``); users with no event the model knows have no score and are in
no audience. A rerun for the same ``scoring.run_date`` replaces that date's rows of the same
targets (Delta ``replaceWhere``).

Distributed like batch scoring: user profiles in ``mapInPandas`` partitions, the network and
the item vectors once per Python worker, users in batches of ``audiences.batch_size``, the
catalogue in blocks of ``scoring.block_items`` items (one online-softmax pass for every target
at once), each partition keeping only its best ``size`` users per target; a window ranks them.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.config import TARGET_TYPES, Config, ConfigError
from recsys.errors import DataError, UsageError
from recsys.events import EVENT_TYPES
from recsys.models.loading import pad_left
from recsys.models.serving import load_network
from recsys.reports import write_report
from recsys.scoring.ranking import category_matches, padded, with_new_items
from recsys.tables import read_table, table_exists, write_table
from recsys.tracking import resolve_model_uri

log = logging.getLogger(__name__)

CANDIDATES_SCHEMA = T.StructType(
    [
        T.StructField("target_idx", T.IntegerType()),
        T.StructField("user_id", T.StringType()),
        T.StructField("score", T.DoubleType()),  # log P(next item in the target's set | history)
        T.StructField("reason_item_idx", T.IntegerType()),
        T.StructField("reason_event", T.StringType()),
    ]
)
# "because they viewed X": the verb of the reason item's event type in the user's history.
VERBS = {"view": "viewed", "click": "clicked", "add_to_cart": "added to their cart", "purchase": "bought"}


@dataclass(frozen=True)
class Target:
    """One audience to build: its kind, the key as given, a readable name and its items."""

    kind: str  # "item" | "category" | "brand"
    key: str  # the item_id, the category path, the brand
    name: str  # the item's title, the path, the brand
    items: tuple[int, ...]  # item_idx of the items in the target's set

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.key}"


def parse_targets(cfg: Config, item: str | None = None, category: str | None = None,
                  brand: str | None = None) -> list[tuple[str, str]]:
    """``[(kind, key)]`` from the command line, else ``audiences.targets`` (empty: automatic)."""
    given = [(k, v.strip()) for k, v in (("item", item), ("category", category), ("brand", brand)) if v is not None]
    for kind, key in given:
        if not key:
            raise UsageError(f"--{kind} needs a value")
    if given:
        return given
    return [(t.split(":", 1)[0], t.split(":", 1)[1].strip()) for t in cfg.audiences.targets]


def resolve_targets(items: pd.DataFrame, wanted: Sequence[tuple[str, str]], cfg: Config) -> list[Target]:
    """The :class:`Target` of each ``(kind, key)`` against ``items`` (item_profiles columns
    item_idx, item_id, title, category, top_category, brand, popularity_rank); with none
    wanted, the automatic targets of ``audiences.auto_*``.

    Raises:
        UsageError: an unknown item, or a category or brand no item has (naming some that exist).
    """
    out: list[Target] = []
    if not wanted:
        ranked = items.sort_values(["popularity_rank", "item_idx"], na_position="last")
        wanted = [("item", i) for i in ranked["item_id"].head(cfg.audiences.auto_items)]
        sizes = items["top_category"].dropna().value_counts()
        wanted += [("category", c) for c in sorted(sizes.index, key=lambda c: (-sizes[c], c))[:cfg.audiences.auto_categories]]
    for kind, key in dict.fromkeys(wanted):  # each target once, in order
        if kind not in TARGET_TYPES:
            raise ConfigError(f"audience target kind {kind!r} is not one of {', '.join(TARGET_TYPES)}")
        if kind == "item":
            row = items[items["item_id"] == key]
            if row.empty:
                raise UsageError(f"no item {key!r} in item_profiles (e.g. {', '.join(items['item_id'].head(3))})")
            out.append(Target(kind, key, str(row["title"].iloc[0] or key), (int(row["item_idx"].iloc[0]),)))
        elif kind == "category":
            cats = [c for c in items["category"].dropna().unique() if category_matches(c, [key])]
            if not cats:
                tops = sorted(items["top_category"].dropna().unique())[:8]
                raise UsageError(f"no item's category is {key!r} or below it; top-level categories: {', '.join(tops)}")
            members = items[items["category"].isin(cats)]["item_idx"]
            out.append(Target(kind, key, key, tuple(int(i) for i in members)))
        else:
            members = items[items["brand"].fillna("").str.lower() == key.lower()]
            if members.empty:
                some = items["brand"].dropna().value_counts().index[:8]
                raise UsageError(f"no item of brand {key!r}; e.g. {', '.join(some)}")
            out.append(Target(kind, key, str(members["brand"].iloc[0]), tuple(int(i) for i in members["item_idx"])))
    return out


def audience_partition(model_uri: str, tracking_uri: str, targets: Sequence[Sequence[int]], exclude: Sequence[bool],
                       size: int, batch_size: int, block_items: int = 8192, fresh=None):
    """The mapInPandas function: user rows (user_id, seq_item_idx, seq_type_idx,
    purchased_item_idx) → this partition's best ``size`` users of each target as
    (target_idx, user_id, score, reason_item_idx, reason_event).

    ``targets``: the item indices of each target's set; ``exclude[t]``: leave out the users who
    bought one of target t's items. The reason is the history item whose vector is closest
    (cosine) to the mean of the target's item vectors.
    """

    def fn(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from recsys.scoring.batch import cached_vectors

        model, _ = load_network(model_uri, tracking_uri)
        vectors, no_vector = cached_vectors(model_uri, model, fresh)
        yield from best_users(model, vectors, no_vector, frames, targets, exclude, size, batch_size, block_items)

    return fn


def best_users(model, vectors, no_vector, frames: Iterator[pd.DataFrame], targets: Sequence[Sequence[int]],
               exclude: Sequence[bool], size: int, batch_size: int, block_items: int = 8192) -> Iterator[pd.DataFrame]:
    """The best ``size`` users of each target among the user rows of ``frames`` (the columns
    of :func:`audience_partition`), as one frame of candidate rows; ``vectors`` /
    ``no_vector``: the model's item vectors (:func:`recsys.scoring.batch.cached_vectors`)."""
    import torch

    from recsys.scoring.audiences import audience_log_probs

    L, n_targets = model.spec.max_len, len(targets)
    with torch.no_grad():
        n_model = vectors.shape[0] - 1
        unit = torch.nn.functional.normalize(vectors, dim=1)
        centre = torch.stack([unit[torch.as_tensor([i for i in t if 0 < i <= n_model] or [0])].mean(0)
                              for t in targets])
        centre = torch.nn.functional.normalize(centre, dim=1)  # (T, H)
        # Which target an excluded purchase belongs to: a (targets) list per item.
        owner = [(i, t) for t, members in enumerate(targets) if exclude[t] for i in members]
        best_s = torch.empty(0, n_targets, dtype=torch.float64)
        best_u = torch.empty(0, n_targets, dtype=torch.long)  # row numbers into the users seen
        best_r = torch.empty(0, n_targets, dtype=torch.long)
        best_e = torch.empty(0, n_targets, dtype=torch.long)
        user_ids: list[str] = []
        for pdf in frames:
            for start in range(0, len(pdf), batch_size):
                part = pdf.iloc[start:start + batch_size]
                items = torch.from_numpy(pad_left(part["seq_item_idx"].tolist(), L))
                types = torch.from_numpy(pad_left(part["seq_type_idx"].tolist(), L))
                known = (items > 0) & (items <= n_model)
                if no_vector is not None:
                    known &= ~no_vector[items.clamp(max=len(no_vector) - 1)]
                items, types = items.masked_fill(~known, 0), types.masked_fill(~known, 0)
                rows = torch.nonzero(known.any(1)).flatten()
                if not len(rows):
                    user_ids.extend(part["user_id"].tolist())
                    continue
                items, types = items[rows], types[rows]
                h = model.encode(items, types, vectors)[:, -1]
                scores = audience_log_probs(h, vectors, targets, block_items=block_items).double()
                if owner:
                    bought = padded([part["purchased_item_idx"].iloc[int(r)] for r in rows])  # (B, W)
                    hit = torch.zeros(len(rows), n_targets, dtype=torch.bool)
                    for i, t in owner:
                        hit[:, t] |= (bought == i).any(1)
                    scores = scores.masked_fill(hit, float("-inf"))
                # The reason: the history item closest to the target (all targets at once, in slices).
                sim_hist = unit[items]  # (B, L, H)
                reason_at = torch.cat([(sim_hist @ centre[s:s + 256].T).masked_fill((items == 0)[:, :, None],
                                                                                   float("-inf")).argmax(1)
                                       for s in range(0, n_targets, 256)], 1)  # (B, T)
                reason_i = items.gather(1, reason_at)
                reason_e = types.gather(1, reason_at)
                offset = len(user_ids)
                user_ids.extend(part["user_id"].tolist())
                best_s = torch.cat([best_s, scores])
                best_u = torch.cat([best_u, (rows + offset)[:, None].expand(-1, n_targets)])
                best_r, best_e = torch.cat([best_r, reason_i]), torch.cat([best_e, reason_e])
                if best_s.shape[0] > size:
                    top = best_s.topk(size, dim=0).indices  # (size, T)
                    best_s, best_u = best_s.gather(0, top), best_u.gather(0, top)
                    best_r, best_e = best_r.gather(0, top), best_e.gather(0, top)
        if not best_s.shape[0]:
            return
        keep = torch.isfinite(best_s)
        t_idx = torch.arange(n_targets).expand_as(best_s)[keep]
        ids = np.asarray(user_ids, dtype=object)[best_u[keep].numpy()]
        events = best_e[keep].tolist()
        yield pd.DataFrame({
            "target_idx": t_idx.numpy().astype(np.int32), "user_id": ids, "score": best_s[keep].numpy(),
            "reason_item_idx": best_r[keep].numpy().astype(np.int32),
            "reason_event": [EVENT_TYPES[e - 1] if e > 0 else None for e in events],
        })


def reason_text(event, title):
    """The sentence a marketer reads: "because they viewed <title>"."""
    verb = F.coalesce(*[F.when(event == t, F.lit(v)) for t, v in VERBS.items()], F.lit("viewed"))
    return F.when(title.isNotNull(), F.concat(F.lit("because they "), verb, F.lit(" "), title)).otherwise(
        F.lit("from their browsing history"))


def audiences(spark: SparkSession, cfg: Config, item: str | None = None, category: str | None = None,
              brand: str | None = None, size: str | int | None = None, evaluate: bool | None = None) -> dict[str, Any]:
    """Build the audiences of the targets (see the module docstring) with the registered
    model and write them to the gold ``audiences`` table; ``evaluate``: also measure them on
    the held-out steps (:func:`recsys.evaluation.audiences.evaluate_audiences`).

    Raises:
        UsageError: an unknown target, or a size that is not a positive number.
        NoModelError: no model is registered.
    """
    from recsys.scoring.batch import new_items

    try:
        n = cfg.audiences.size if size is None else int(size)
        if n < 1:
            raise ValueError
    except ValueError:
        raise UsageError(f"--size must be a positive whole number, got {size!r}") from None
    model_uri, version = resolve_model_uri(cfg)
    run_date = cfg.scoring.run_date or dt.datetime.now(dt.timezone.utc).date().isoformat()
    profiles = read_table(spark, cfg, "item_profiles")
    catalogue = profiles.select("item_idx", "item_id", "title", "category", "top_category", "brand",
                                "popularity_rank").toPandas()
    if catalogue.empty:
        raise DataError("item_profiles is empty: run `recsys build-profiles` first")
    targets = resolve_targets(catalogue, parse_targets(cfg, item, category, brand), cfg)
    trained = load_network(model_uri, cfg.tracking_uri)[0].spec.num_items
    fresh = new_items(spark, cfg, trained)
    users = read_table(spark, cfg, "user_profiles").select("user_id", "seq_item_idx", "seq_type_idx",
                                                           "purchased_item_idx")
    exclude = [cfg.audiences.exclude_buyers and t.kind == "item" for t in targets]
    found = users.mapInPandas(
        audience_partition(model_uri, cfg.tracking_uri, [t.items for t in targets], exclude, n,
                           cfg.audiences.batch_size, cfg.scoring.block_items, fresh),
        CANDIDATES_SCHEMA,
    )
    meta = spark.createDataFrame(
        [(i, t.kind, t.key, t.name) for i, t in enumerate(targets)],
        "target_idx int, target_type string, target string, target_name string",
    )
    reason_items = profiles.select(F.col("item_idx").alias("reason_item_idx"), F.col("item_id").alias("reason_item_id"),
                                   F.col("title").alias("reason_title"))
    ranked = found.withColumn("rank", F.row_number().over(
        Window.partitionBy("target_idx").orderBy(F.desc("score"), "user_id"))).where(F.col("rank") <= n)
    out = (
        ranked.join(F.broadcast(meta), "target_idx")
        .join(F.broadcast(reason_items), "reason_item_idx", "left")
        .select("target_type", "target", "target_name", F.col("rank").cast("int"), "user_id", "score",
                F.exp("score").alias("probability"), reason_text(F.col("reason_event"), F.col("reason_title")).alias("reason"),
                "reason_item_id", F.lit(version).alias("model_version"), F.lit(run_date).cast("date").alias("run_date"))
    )
    labels = ", ".join("'" + t.label.replace("'", "''") + "'" for t in targets)
    if table_exists(cfg, "audiences"):
        write_table(out, cfg, "audiences",
                    replace_where=f"run_date = '{run_date}' AND concat(target_type, ':', target) IN ({labels})")
    else:
        write_table(out, cfg, "audiences", partition_by=["run_date"])
    written = (read_table(spark, cfg, "audiences").where(F.col("run_date") == F.lit(run_date).cast("date"))
               .where(F.concat("target_type", F.lit(":"), "target").isin([t.label for t in targets])))
    counts = {f"{r['target_type']}:{r['target']}": r["count"] for r in written.groupBy("target_type", "target").count().collect()}
    report: dict[str, Any] = {
        "model_uri": model_uri, "model_version": version, "run_date": run_date, "size": n,
        "targets": [{"target": t.label, "name": t.name, "items": len(t.items), "users": counts.get(t.label, 0)}
                    for t in targets],
        "rows": sum(counts.values()), "table": cfg.table_path("audiences"),
    }
    if len(targets) == 1:
        report["audience"] = [{k: r[k] for k in ("rank", "user_id", "probability", "reason")}
                              for r in written.orderBy("rank").limit(min(n, 20)).collect()]
    if evaluate:
        from recsys.evaluation.audiences import evaluate_audiences

        report["evaluation"] = evaluate_audiences(spark, cfg, size=n)
    write_report(cfg, "audiences", report)
    return report


def render_audiences(report: dict[str, Any]) -> str:
    """The command line's view: one line per target, and the audience when there is one target."""
    lines = [f"audiences of model version {report['model_version']} on {report['run_date']} "
             f"(up to {report['size']} users each) -> {report['table']}"]
    for t in report["targets"]:
        lines.append(f"  {t['target']:<40} {t['users']:>6} users  ({t['items']} items: {t['name']})")
    for r in report.get("audience", []):
        lines.append(f"  {r['rank']:>4}. {r['user_id']:<24} p={r['probability']:.4f}  {r['reason']}")
    if "evaluation" in report:
        from recsys.evaluation.audiences import render_evaluation

        lines.append(render_evaluation(report["evaluation"]))
    return "\n".join(lines)
