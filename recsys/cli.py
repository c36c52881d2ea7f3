"""The ``recsys`` command: one sub-command per pipeline stage, plus ``demo``.

    recsys <stage> [--config conf/local.yaml] [key=value ...]

A user mistake (unknown config key, missing input folder, missing table) ends with one
clear line on stderr and exit code 2, never a stack trace.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from typing import Any, Callable, Sequence

from recsys.config import Config, ConfigError, load_config

STAGES = ("generate", "import", "ingest", "build-profiles", "embed-text", "train", "evaluate", "recommend", "forget-user", "demo")


def _quiet() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    # Spark's python workers inherit this, so petastorm's pyarrow warnings stay quiet there too.
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("py4j", "mlflow", "alembic", "urllib3", "petastorm", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_generate(cfg: Config) -> dict[str, Any]:
    from recsys.datagen import generate_shop

    import datetime as dt

    g = cfg.generator
    # A fixed start keeps the demo reproducible; a long history is moved back so that it
    # ends before today (ingest rejects events stamped in the future).
    start = min(dt.date(2026, 10, 1), dt.date.today() - dt.timedelta(days=g.days))
    return generate_shop(cfg.lakehouse.landing_path, users=g.users, items=g.items, days=g.days, seed=g.seed,
                         malformed_rate=g.malformed_rate, start=start)


def run_ingest(cfg: Config) -> dict[str, Any]:
    from recsys.ingest.pipeline import check_landing, ingest
    from recsys.spark import get_spark

    check_landing(cfg)  # a missing folder is reported before Spark starts
    return ingest(get_spark(cfg), cfg, full=cfg.ingest.full_refresh)


def run_build_profiles(cfg: Config) -> dict[str, Any]:
    from recsys.features.profiles import build_profiles
    from recsys.spark import get_spark

    return build_profiles(get_spark(cfg), cfg, full=cfg.features.full_rebuild)


def run_embed_text(cfg: Config) -> dict[str, Any]:
    from recsys.features.text import build_item_text_embeddings
    from recsys.spark import get_spark

    return build_item_text_embeddings(get_spark(cfg), cfg)


def run_train(cfg: Config) -> dict[str, Any]:
    from recsys.spark import get_spark
    from recsys.training.launch import train

    out = train(get_spark(cfg), cfg)
    out.pop("history", None)
    return out


def run_evaluate(cfg: Config) -> dict[str, Any]:
    from recsys.evaluation.evaluate import evaluate
    from recsys.spark import get_spark

    return evaluate(get_spark(cfg), cfg)


def run_recommend(cfg: Config) -> dict[str, Any]:
    from recsys.scoring.batch import recommend
    from recsys.spark import get_spark

    return recommend(get_spark(cfg), cfg)


def run_forget_user(cfg: Config) -> dict[str, Any]:
    from recsys.forget import forget_user
    from recsys.spark import get_spark

    if not cfg.privacy.user:
        raise ValueError("forget-user needs the user id: recsys forget-user privacy.user=<raw user id>")
    return forget_user(get_spark(cfg), cfg, cfg.privacy.user)


def run_import(cfg: Config, source: str | None = None, fmt: str | None = None) -> dict[str, Any]:
    from recsys.ingest.adapters import import_dataset

    if not source or not fmt:
        raise ValueError("import needs --source PATH and --format {sequences,diginetica,csv}")
    return import_dataset(source, cfg.lakehouse.landing_path, fmt)


def run_demo(cfg: Config) -> dict[str, Any]:
    from recsys.demo import demo
    from recsys.spark import get_spark

    return demo(get_spark(cfg), cfg)


RUNNERS: dict[str, Callable[[Config], dict[str, Any]]] = {
    "generate": run_generate,
    "ingest": run_ingest,
    "build-profiles": run_build_profiles,
    "embed-text": run_embed_text,
    "train": run_train,
    "evaluate": run_evaluate,
    "recommend": run_recommend,
    "forget-user": run_forget_user,
    "demo": run_demo,
}

# Exceptions that mean "the user asked for something that cannot be done as asked".
USER_ERRORS = (ConfigError, FileNotFoundError, LookupError, ValueError)


def parse_args(argv: Sequence[str], stage: str | None = None) -> tuple[str, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="recsys" if stage is None else f"jobs/{stage}.py",
                                description="Distributed e-commerce recommendation on Spark, Delta, PyTorch and MLflow")
    if stage is None:
        p.add_argument("stage", choices=STAGES, help="the pipeline stage to run")
    p.add_argument("--config", default=None, help="an overlay over conf/base.yaml, e.g. conf/local.yaml")
    if stage in (None, "import"):
        p.add_argument("--source", help="import: the dataset file to convert into raw logs")
        p.add_argument("--format", dest="fmt", choices=("sequences", "diginetica", "csv"), help="import: its format")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=3")
    args = p.parse_intermixed_args(list(argv))
    return (stage or args.stage), args


def main(argv: Sequence[str] | None = None, stage: str | None = None) -> int:
    """Entry point of ``recsys`` and of every ``jobs/<stage>.py``. Returns the exit code."""
    stage, args = parse_args(sys.argv[1:] if argv is None else argv, stage)
    _quiet()
    try:
        cfg = load_config(args.config, args.overrides)
        if stage == "import":
            result = run_import(cfg, args.source, args.fmt)
        else:
            result = RUNNERS[stage](cfg)
    except USER_ERRORS as e:
        if os.environ.get("RECSYS_DEBUG"):
            raise
        print(f"recsys {stage}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a broken environment: the message says how to fix it
        print(f"recsys {stage}: error: {e}", file=sys.stderr)
        return 1
    if stage != "demo":
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
