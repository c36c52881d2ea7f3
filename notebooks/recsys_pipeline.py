# Databricks notebook source
# MAGIC %md
# MAGIC # recsys: the whole pipeline, stage by stage
# MAGIC
# MAGIC Raw shop logs → bronze Delta tables → gold profiles and training examples →
# MAGIC a transformer recommender trained with `TorchDistributor` and registered in MLflow →
# MAGIC full-ranking evaluation → top-K recommendations written back to Delta.
# MAGIC
# MAGIC The stages are those of the registry (`recsys.stages`), run in its order: the same code
# MAGIC as `recsys <stage>`, `jobs/<stage>.py` and `recsys demo`. Parameters come from widgets on
# MAGIC Databricks and from defaults (or the environment variables `RECSYS_CONFIG`,
# MAGIC `RECSYS_OVERRIDES`, `RECSYS_GENERATE`, `RECSYS_STAGES`) when run as a plain Python file.

# COMMAND ----------

import json
import os

DEFAULTS = {
    "config": os.environ.get("RECSYS_CONFIG", "conf/local.yaml"),
    "overrides": os.environ.get("RECSYS_OVERRIDES", ""),
    "generate": os.environ.get("RECSYS_GENERATE", "true"),
    "stages": os.environ.get("RECSYS_STAGES", ""),  # "" = every pipeline stage
}


def widget(name: str) -> str:
    """The widget value on Databricks, the default elsewhere."""
    try:
        dbutils  # noqa: F821  (exists only on Databricks)
    except NameError:
        return DEFAULTS[name]
    dbutils.widgets.text(name, DEFAULTS[name])  # noqa: F821
    return dbutils.widgets.get(name)  # noqa: F821


config_path = widget("config")
overrides = [o for o in widget("overrides").split() if o]
generate = widget("generate").lower() == "true"
only = [s.strip() for s in widget("stages").split(",") if s.strip()]

# COMMAND ----------

from recsys import stages
from recsys.config import load_config
from recsys.spark import get_spark

# Freshly generated files replace what was ingested before.
cfg = load_config(config_path, overrides + (["ingest.full_refresh=true"] if generate else []))
spark = get_spark(cfg)
todo = [s for s in stages.pipeline(cfg) if (generate or s.name != "generate") and (not only or s.name in only)]
print(f"lakehouse: {cfg.lakehouse.root_uri}  tracking: {cfg.tracking_uri}")
print("stages:", ", ".join(s.name for s in todo))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Run each stage (generate, ingest, build-profiles, embed-text, train, evaluate, promote, recommend,
# MAGIC build-search, train-search-ranker, search-results)

# COMMAND ----------

reports = {}
for stage in todo:
    print(f"--- {stage.name}: {stage.help}")
    reports[stage.name] = stages.run_stage(stage.name, cfg, spark)
    reports[stage.name].pop("history", None)
    print(json.dumps(reports[stage.name], indent=1, default=str)[:2000])

# COMMAND ----------

# MAGIC %md
# MAGIC ## What came out: the first recommendations

# COMMAND ----------

if "recommend" in reports:
    spark.read.format("delta").load(cfg.table_path("recommendations")).orderBy("user_id", "rank").show(10)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Search: the logged searches ranked by the learned ranker, and a query's suggestions

# COMMAND ----------

if "search-results" in reports:
    spark.read.format("delta").load(cfg.table_path("search_results")).orderBy("search_id", "rank") \
        .select("query_norm", "rank", "item_id", "reason", "personalised").show(10, truncate=False)
    spark.read.format("delta").load(cfg.table_path("query_suggestions")).where("length(prefix) = 2") \
        .orderBy("prefix").show(5, truncate=100)
