"""The ``recsys`` command, built from the stage registry (:mod:`recsys.stages`)::

    recsys <stage> [--config conf/local.yaml] [--dry-run] [stage options] [key=value ...]
    recsys demo [--config …] [key=value ...]
    recsys stages

A user mistake (a :class:`~recsys.errors.RecsysError`: unknown config key, missing input,
missing table, no model) ends with one line on stderr and exit code 2 (1 for a broken
set-up); set ``RECSYS_DEBUG=1`` to see its traceback. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from typing import Any, Sequence

from recsys import stages
from recsys.config import Config, load_config
from recsys.errors import RecsysError

COMMANDS = ("demo", "stages")


def configure_logging(level: int = logging.INFO) -> None:
    """Log lines with times; the stack's chatty loggers and warnings quiet."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    # Spark's python workers inherit this, so petastorm's pyarrow warnings stay quiet there too.
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("py4j", "mlflow", "alembic", "urllib3", "petastorm", "filelock", "bm25s", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="an overlay over conf/base.yaml, e.g. conf/local.yaml")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the tables read and "
                                                          "written, and stop (no Spark)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=3")


def _stage_parser(p: argparse.ArgumentParser, stage: stages.Stage) -> None:
    for o in stage.options:
        if o.switch:
            p.add_argument(o.flag, dest=o.dest, help=o.help, action="store_true", default=None)
        else:
            p.add_argument(o.flag, dest=o.dest, help=o.help, choices=o.choices)
    _common(p)


def _describe(stage: stages.Stage) -> str:
    reads = ", ".join(stage.reads) or "-"
    writes = ", ".join(stage.writes) or ("MLflow" if stage.name in ("train", "evaluate", "promote") else "-")
    return f"{stage.help}.\nreads: {reads}\nwrites: {writes}\nspark-submit entry point: {stage.job}"


def command_parser(command: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of one command: a registered stage, or ``demo``."""
    fmt = argparse.RawDescriptionHelpFormatter
    if command == "demo":
        p = argparse.ArgumentParser(prog=prog or "recsys demo", formatter_class=fmt, description=DEMO_HELP)
        _common(p)
    else:
        s = stages.get(command)
        p = argparse.ArgumentParser(prog=prog or f"recsys {command}", description=_describe(s), formatter_class=fmt)
        _stage_parser(p, s)
    p.set_defaults(command=command)
    return p


DEMO_HELP = ("Generate a shop and run the whole pipeline on it (" + ", ".join(s.name for s in stages.STAGES if s.pipeline)
             + "), then show what came out.")


def parse(argv: Sequence[str], stage: str | None = None) -> argparse.Namespace:
    """Parse ``recsys <command> …`` (or, for ``jobs/<stage>.py``, that stage's arguments).
    Options and ``key=value`` overrides may come in any order."""
    if stage is not None:
        prog = "jobs/demo.py" if stage == "demo" else stages.get(stage).job
        return command_parser(stage, prog=prog).parse_intermixed_args(list(argv))
    if not argv or argv[0].startswith("-") or argv[0] not in (*stages.BY_NAME, *COMMANDS):
        return build_parser().parse_args(list(argv))  # help, or an error listing the commands
    if argv[0] == "stages":
        return build_parser().parse_args(list(argv))
    return command_parser(argv[0]).parse_intermixed_args(list(argv[1:]))


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: one sub-command per registered stage, plus ``demo`` and ``stages``."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="recsys", formatter_class=fmt,
                                description="Distributed e-commerce recommendation on Spark, Delta, PyTorch and MLflow.")
    sub = p.add_subparsers(dest="command", metavar="<command>", required=True)
    for s in stages.STAGES:
        sp = sub.add_parser(s.name, help=s.help, description=_describe(s), formatter_class=fmt)
        _stage_parser(sp, s)
    demo = sub.add_parser("demo", help="generate a shop and run the whole pipeline on it, then show what came out",
                          description=DEMO_HELP, formatter_class=fmt)
    _common(demo)
    sub.add_parser("stages", help="list the stages with the tables they read and write")
    return p


def dry_run(stage_name: str, cfg: Config) -> dict[str, Any]:
    """What ``stage_name`` would do under ``cfg``: the resolved config and the table locations."""
    names = [s.name for s in stages.pipeline(cfg)] if stage_name == "demo" else [stage_name]
    return {"stages": {n: stages.get(n).locations(cfg) for n in names}, "config": cfg.to_flat_dict()}


def list_stages() -> str:
    lines = []
    for s in stages.STAGES:
        lines.append(f"{s.name:<15} {s.help}")
        lines.append(f"{'':<15} reads: {', '.join(s.reads) or '-'}; writes: {', '.join(s.writes) or '-'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, stage: str | None = None) -> int:
    """Entry point of ``recsys`` and of every ``jobs/<stage>.py``. Returns the exit code."""
    args = parse(list(sys.argv[1:] if argv is None else argv), stage)
    command = args.command
    if command == "stages":
        print(list_stages())
        return 0
    configure_logging(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.dry_run:
            print(json.dumps(dry_run(command, cfg), indent=2, default=str))
            return 0
        if command == "demo":
            from recsys.demo import demo

            demo(cfg)
            return 0
        s = stages.get(command)
        if s.needs_spark and "landing" in s.reads:
            from recsys.ingest.pipeline import check_landing

            check_landing(cfg)  # a missing local folder is reported before Spark starts
        result = stages.run_stage(command, cfg, **{o.dest: getattr(args, o.dest) for o in s.options})
    except RecsysError as e:
        if os.environ.get("RECSYS_DEBUG"):
            raise
        print(f"recsys {command}: error: {e}", file=sys.stderr)
        return e.exit_code
    result.pop("history", None)  # training's per-epoch history is in MLflow
    render = stages.get(command).renderer() if command != "demo" else None
    print(render(result) if render else json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
