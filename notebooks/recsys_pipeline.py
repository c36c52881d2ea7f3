# Databricks notebook source
# MAGIC %md
# MAGIC # recsys: the whole pipeline, stage by stage
# MAGIC
# MAGIC Raw shop logs → bronze Delta tables → gold profiles and training examples →
# MAGIC a transformer recommender trained with `TorchDistributor` and registered in MLflow →
# MAGIC full-ranking evaluation → top-K recommendations written back to Delta.
# MAGIC
# MAGIC Parameters come from widgets on Databricks and from defaults (or the environment
# MAGIC variables `RECSYS_CONFIG` and `RECSYS_OVERRIDES`) when run as a plain Python file.

# COMMAND ----------

import json
import os

DEFAULTS = {
    "config": os.environ.get("RECSYS_CONFIG", "conf/local.yaml"),
    "overrides": os.environ.get("RECSYS_OVERRIDES", ""),
    "generate": os.environ.get("RECSYS_GENERATE", "true"),
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

# COMMAND ----------

from recsys.config import load_config
from recsys.spark import get_spark

cfg = load_config(config_path, overrides)
spark = get_spark(cfg)
print(f"lakehouse: {cfg.lakehouse.root_path}  tracking: {cfg.tracking_uri}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## 1. Raw data
# MAGIC Generated shop logs (skip with the widget `generate=false` when real files are in the landing folder).

# COMMAND ----------

if generate:
    from recsys.datagen import generate_shop

    g = cfg.generator
    print(generate_shop(cfg.lakehouse.landing_path, users=g.users, items=g.items, days=g.days, seed=g.seed,
                        malformed_rate=g.malformed_rate))

# COMMAND ----------

# MAGIC %md
# MAGIC ## 2. Ingest: validate into bronze Delta tables, quarantine bad rows

# COMMAND ----------

from recsys.ingest.pipeline import ingest

ingest_report = ingest(spark, cfg, full=generate)  # freshly generated files replace what was there
print(json.dumps({k: ingest_report[k] for k in ("events", "catalog")}, indent=2))

# COMMAND ----------

# MAGIC %md
# MAGIC ## 3. Profiles and training examples (gold)

# COMMAND ----------

from recsys.features.profiles import build_profiles

print(build_profiles(spark, cfg))

# COMMAND ----------

# MAGIC %md
# MAGIC ## 3b. Item text embeddings (pretrained sentence encoder, pandas UDF; only new or changed items)

# COMMAND ----------

if cfg.features.text_embeddings:
    from recsys.features.text import build_item_text_embeddings

    print(build_item_text_embeddings(spark, cfg))

# COMMAND ----------

# MAGIC %md
# MAGIC ## 4. Train with TorchDistributor, tracked and registered in MLflow

# COMMAND ----------

from recsys.training.launch import train

train_report = train(spark, cfg)
print({k: train_report[k] for k in ("run_id", "model_version", "epochs_run", "best_val_ndcg_at_10")})

# COMMAND ----------

# MAGIC %md
# MAGIC ## 5. Evaluate: full-catalogue ranking on the held-out test items

# COMMAND ----------

from recsys.evaluation.evaluate import evaluate

eval_report = evaluate(spark, cfg)
print(json.dumps(eval_report["metrics"], indent=2))

# COMMAND ----------

# MAGIC %md
# MAGIC ## 6. Recommend: top-K for every user, written to Delta

# COMMAND ----------

from recsys.scoring.batch import recommend

rec_report = recommend(spark, cfg)
print(rec_report)
spark.read.format("delta").load(cfg.table_path("recommendations")).orderBy("user_id", "rank").show(10)
