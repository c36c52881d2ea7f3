"""The stage registry: every pipeline stage once, with what it reads, writes and does.

The ``recsys`` command (one sub-command and ``--help`` per stage), ``recsys demo``, the
notebook, ``jobs/*.py`` and the tests all iterate :data:`STAGES`; a new capability is one
module with a ``(spark, cfg, **options) -> dict`` function plus one line here.

Functions are named as ``"module:function"`` and imported only when their stage runs, so
the command starts fast and a stage's heavy dependencies (torch, sentence-transformers) are
loaded only by the stages that use them.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from recsys.config import Config, TablesConfig
from recsys.errors import UsageError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

BRONZE = ("events", "catalog", "users", "quarantine")


@dataclass(frozen=True)
class Option:
    """A command-line option of one stage, passed to its function as a keyword argument."""

    flag: str  # "--source"
    dest: str  # the keyword argument
    help: str
    choices: tuple[str, ...] | None = None
    switch: bool = False  # a flag without a value (True when given)


@dataclass(frozen=True)
class Stage:
    name: str  # the sub-command, e.g. "build-profiles"
    target: str  # "module:function", called as function(spark, cfg, **options)
    help: str
    reads: tuple[str, ...] = ()  # TablesConfig names, or "landing" for the raw files
    writes: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()
    needs_spark: bool = True  # False: the function gets spark=None (it starts one only if it must)
    pipeline: bool = True  # part of the end-to-end pipeline (demo, notebook, bundle), in registry order
    enabled: Callable[[Config], bool] = field(default=lambda cfg: True, compare=False)
    render: str = ""  # "module:function" turning the report into text for the command line ("" = JSON)

    @property
    def job(self) -> str:
        """The spark-submit entry point of this stage: ``jobs/<name with _>.py``."""
        return f"jobs/{self.name.replace('-', '_')}.py"

    def function(self) -> Callable[..., dict[str, Any]]:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)

    def renderer(self) -> Callable[[dict[str, Any]], str] | None:
        if not self.render:
            return None
        module, name = self.render.split(":")
        return getattr(importlib.import_module(module), name)

    def locations(self, cfg: Config) -> dict[str, dict[str, str]]:
        """Where each table this stage reads and writes lives under ``cfg``: its location, or
        with ``lakehouse.catalog`` set, ``catalog.schema.name at <location>``."""
        def where(n: str) -> str:
            if n == "landing":
                return cfg.lakehouse.landing_uri
            name = cfg.table_name(n)
            return f"{name.replace('`', '')} at {cfg.table_path(n)}" if name else cfg.table_path(n)
        return {"reads": {n: where(n) for n in self.reads}, "writes": {n: where(n) for n in self.writes}}


STAGES: tuple[Stage, ...] = (
    Stage("generate", "recsys.datagen:generate", "write a generated shop's raw logs into the landing folder",
          writes=("landing",), needs_spark=False),
    Stage("import", "recsys.ingest.adapters:import_from_config",
          "convert a public dataset or a CSV export into raw logs in the landing folder",
          writes=("landing",), needs_spark=False, pipeline=False,
          options=(Option("--source", "source", "the dataset file to convert"),
                   Option("--format", "fmt", "its format", ("sequences", "diginetica", "csv")),
                   Option("--map", "mapping", "csv: contract key=column pairs, e.g. "
                          "user_id=uid,item_id=sku,ts=time[,event_type=action,...]"))),
    Stage("ingest", "recsys.ingest.pipeline:ingest",
          "validate new landing files into bronze Delta tables; bad rows to quarantine with a reason",
          reads=("landing",), writes=BRONZE),
    Stage("build-profiles", "recsys.features.profiles:build_profiles",
          "user and item profiles and the training examples (incremental from the change feed)",
          reads=("events", "catalog", "users"),
          writes=("user_profiles", "item_profiles", "item_daily_counts", "training_examples")),
    Stage("embed-text", "recsys.features.text:build_item_text_embeddings",
          "item text embeddings from the pretrained sentence encoder (new or changed items only)",
          reads=("catalog",), writes=("item_text_embeddings",), enabled=lambda cfg: cfg.features.text_embeddings),
    Stage("train", "recsys.training.launch:train",
          "train the sequential recommender with TorchDistributor; log and register it in MLflow as the challenger",
          reads=("training_examples", "item_profiles", "item_text_embeddings"),
          options=(Option("--resume", "resume_run_id", "continue this interrupted MLflow run from its last checkpoint"),)),
    Stage("evaluate", "recsys.evaluation.evaluate:evaluate",
          "full-catalogue ranking metrics of the model and the baselines on the held-out items",
          reads=("training_examples", "item_profiles")),
    Stage("promote", "recsys.promotion:promote",
          "make the challenger the champion if it beats it (and most-popular) on the test figures",
          needs_spark=False, options=(Option("--force", "force", "promote whatever the figures", switch=True),)),
    Stage("compare", "recsys.promotion:compare", "print the challenger and the champion side by side",
          needs_spark=False, pipeline=False, render="recsys.promotion:render_comparison"),
    Stage("recommend", "recsys.scoring.batch:recommend", "top-K recommendations with a reason for every user",
          reads=("user_profiles", "item_profiles"), writes=("recommendations",)),
    Stage("build-search", "recsys.search.tables:build_search",
          "the searches (with what shoppers did next), query stats and query suggestions (incremental)",
          reads=("events",), writes=("searches", "query_stats", "query_suggestions")),
    Stage("train-search-ranker", "recsys.search.ranker:train_search_ranker",
          "train the learned search ranker (LightGBM LambdaMART) on the searches' graded labels; register it in MLflow",
          reads=("searches", "item_profiles", "catalog", "user_profiles", "item_text_embeddings", "query_stats")),
    Stage("search-results", "recsys.search.service:search_results",
          "rank every logged search of a day (search.run_date) and write them to search_results",
          reads=("searches", "item_profiles", "catalog", "user_profiles", "item_text_embeddings"), writes=("search_results",)),
    Stage("audiences", "recsys.scoring.audience_job:audiences",
          "the users most likely to engage next with an item, a category or a brand (audiences.targets, else the "
          "most popular items and largest categories), with a reason each",
          reads=("user_profiles", "item_profiles", "item_text_embeddings"), writes=("audiences",),
          render="recsys.scoring.audience_job:render_audiences",
          options=(Option("--item", "item", "one item's audience (its item_id)"),
                   Option("--category", "category", "one category's audience (a path: it covers the categories below)"),
                   Option("--brand", "brand", "one brand's audience"),
                   Option("--size", "size", "users per audience (default audiences.size)"),
                   Option("--evaluate", "evaluate", "also measure precision/recall on the held-out steps against "
                          "popularity-by-category and ALS", switch=True))),
    Stage("report", "recsys.htmlreport.build:report",
          "one self-contained HTML report of the run: tables, funnel, long tail, training, evaluation, a gallery "
          "of users, audiences, searches",
          reads=("events", "catalog", "quarantine", "user_profiles", "recommendations", "audiences", "searches",
                 "search_results")),
    Stage("search", "recsys.search.service:search", "search the catalogue for one user, with a reason per result",
          reads=("item_profiles", "catalog", "user_profiles", "item_text_embeddings", "query_stats", "searches"), pipeline=False,
          render="recsys.search.service:render_search",
          options=(Option("--user", "raw_user_id", "the raw user id (as in the logs; omit for an anonymous search)"),
                   Option("--query", "query", "what the shopper typed"),
                   Option("--top-k", "top_k", "how many results (default search.top_k)"))),
    Stage("suggest", "recsys.search.service:suggest", "complete a typed prefix into popular queries, for one user",
          reads=("query_suggestions", "query_stats", "user_profiles"), pipeline=False,
          render="recsys.search.service:render_suggest",
          options=(Option("--user", "raw_user_id", "the raw user id (omit for anonymous suggestions)"),
                   Option("--prefix", "prefix", "what the shopper has typed so far"),
                   Option("--top-k", "top_k", "how many suggestions (default search.top_k)"))),
    Stage("forget-user", "recsys.forget:forget_user", "erase one user from every table (GDPR article 17)",
          reads=("forget_audit",), writes=("events", "users", "quarantine", "user_profiles", "training_examples", "searches",
                                           "query_stats", "query_suggestions", "search_results",
                                           "recommendations", "audiences", "forget_audit"),
          pipeline=False, options=(Option("--user", "raw_user_id", "the raw user id (default: privacy.user)"),)),
    Stage("maintain", "recsys.maintain:maintain",
          "OPTIMIZE every Delta table (Z-ordered by the keys the jobs read by), VACUUM it (maintenance.retain_hours), "
          "and report the sizes before and after",
          writes=tuple(f.name for f in dataclasses.fields(TablesConfig)), pipeline=False,
          render="recsys.maintain:render_maintain",
          options=(Option("--table", "table", "only this table (a tables.* name)"),
                   Option("--skip-vacuum", "skip_vacuum", "OPTIMIZE only", switch=True))),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


def get(name: str) -> Stage:
    """The stage called ``name``.

    Raises:
        UsageError: no such stage, naming the ones there are.
    """
    try:
        return BY_NAME[name]
    except KeyError:
        raise UsageError(f"unknown stage {name!r}; stages: {', '.join(BY_NAME)}") from None


def pipeline(cfg: Config) -> list[Stage]:
    """The end-to-end pipeline's stages under ``cfg``, in order."""
    return [s for s in STAGES if s.pipeline and s.enabled(cfg)]


def run_stage(name: str, cfg: Config, spark: SparkSession | None = None, **options: Any) -> dict[str, Any]:
    """Run one stage with ``cfg`` (starting Spark when the stage needs it); return its report."""
    stage = get(name)
    if spark is None and stage.needs_spark:
        from recsys.spark import get_spark

        spark = get_spark(cfg)
    report = stage.function()(spark, cfg, **{k: v for k, v in options.items() if v is not None})
    if cfg.lakehouse.catalog and spark is not None:
        # catalog tables: whatever the stage wrote, by any writer, is registered by name too
        from recsys.tables import register_table

        for name in stage.writes:
            if name != "landing":
                register_table(spark, cfg, name)
    return report
