"""Quality benchmark: one public sequence dataset through the whole pipeline, then full-ranking metrics.

    python bench/quality.py --dataset PATH [--format sequences] [--out bench/results/NAME.json]
                            [--root DIR] [--config conf/local.yaml] [key=value ...]

The dataset is imported with the project's adapter into the landing folder of a scratch
lakehouse (default ``/tmp/recsys-bench/<dataset stem>``), then the project's own stages run
in order: ``ingest(full=True)`` → ``build_profiles`` → ``train`` (TorchDistributor, as
configured) → ``evaluate`` (test split, leave-one-out, full catalogue, history masked).

The config is ``conf/base.yaml`` + ``--config`` (``conf/local.yaml`` by default), then
``lakehouse.root=<root>`` and ``evaluation.baselines=[popularity, cooccurrence, als]`` (the
baselines this checkout supports), then the key=value overrides given here (they win).

It prints a table and writes a JSON file: HR@5/10/20, NDCG@5/10/20 and MRR for the model and
each baseline, training time (the loop's ``train_seconds`` and the whole train stage), epochs
run, best epoch, the per-epoch validation history, users/items, the overrides, the machine,
the command line, and the published figures for the dataset when the datasets README next to
the file lists them (matched by name, the same rule for every dataset).

Exit codes: 0 done, 2 a user mistake (missing dataset file, bad config key), 1 a stage failed.
Timings depend heavily on the machine and on what else runs on it: the JSON records nproc,
the CPU model and the load average so figures can be read in context.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import _machine  # bench/ is on sys.path when a benchmark runs as a script

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SCORER_ORDER = ("model", "popularity", "cooccurrence", "als")
METRIC_KEYS = ("hr_at_5", "hr_at_10", "hr_at_20", "ndcg_at_5", "ndcg_at_10", "ndcg_at_20", "mrr")
WANTED_BASELINES = ("popularity", "cooccurrence", "als")
MARKER = ".recsys-bench"  # a lakehouse root holding this file was made here and may be wiped
STATE = "_bench_state.json"  # finished stages' results and times, for --resume
RESUMABLE = ("import", "ingest", "build_profiles", "train")

# Published figures, used only when the datasets README (parsed first) is not found. Same
# content as /work/shared/datasets/README.md "Published results on exactly these files".
PUBLISHED_FALLBACK = [
    {"dataset": "Beauty", "model": "ICLRec (Chen et al., WWW 2022)",
     "hr_at_10": 0.0744, "ndcg_at_10": 0.0403, "hr_at_20": 0.1058, "ndcg_at_20": 0.0483},
    {"dataset": "Yelp", "model": "ICLRec",
     "hr_at_10": 0.0409, "ndcg_at_10": 0.0207, "hr_at_20": 0.0659, "ndcg_at_20": 0.0270},
]


class UsageError(Exception):
    """A user mistake: reported on one line, exit code 2."""


# --- published figures -------------------------------------------------------------------


def _parse_published(readme: Path) -> list[dict[str, Any]]:
    """Rows of the markdown table whose header starts ``| dataset | model`` in ``readme``."""
    rows: list[dict[str, Any]] = []
    header: list[str] | None = None
    for line in readme.read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if not s.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in s.strip("|").split("|")]
        if header is None:
            if len(cells) >= 3 and cells[0].lower() == "dataset" and cells[1].lower().startswith("model"):
                header = [c.lower() for c in cells]
            continue
        if all(set(c) <= set("-: ") for c in cells):
            continue
        row: dict[str, Any] = {"dataset": cells[0], "model": cells[1]}
        for name, value in zip(header[2:], cells[2:]):
            m = re.fullmatch(r"(hr|ndcg|recall|mrr)@?(\d*)", name.replace(" ", ""))
            key = f"{m.group(1)}_at_{m.group(2)}" if m and m.group(2) else (m.group(1) if m else name)
            try:
                row[key] = float(value)
            except ValueError:
                row[key] = value
        rows.append(row)
    return rows


def published_for(dataset: Path) -> dict[str, Any] | None:
    """Published figures whose dataset name is a word of the file's stem (``amazon_beauty`` → Beauty)."""
    readme = dataset.resolve().parent / "README.md"
    rows, source = [], None
    if readme.is_file():
        try:
            rows, source = _parse_published(readme), str(readme)
        except (OSError, UnicodeDecodeError):
            rows = []
    if not rows:
        rows, source = PUBLISHED_FALLBACK, "bench/quality.py (copy of the datasets README)"
    words = set(re.split(r"[^a-z0-9]+", dataset.stem.lower())) - {""}
    for row in rows:
        name = re.sub(r"[^a-z0-9]+", "", str(row["dataset"]).lower())
        if name and (name in words or name == re.sub(r"[^a-z0-9]+", "", dataset.stem.lower())):
            return {**row, "source": source}
    return None


# --- machine -----------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    return _machine.machine_info()


def loadavg() -> list[float] | None:
    return _machine.loadavg()


def versions() -> dict[str, str]:
    return _machine.versions(("pyspark", "delta-spark", "torch", "petastorm", "mlflow"))


# --- config ------------------------------------------------------------------------------


def build_config(config_path: str, root: Path, user_overrides: list[str]):
    from recsys.config import load_config

    baselines = list(WANTED_BASELINES)
    ours = [f"lakehouse.root={root}", f"evaluation.baselines=[{', '.join(baselines)}]"]
    cfg = load_config(config_path, ours + list(user_overrides))
    return cfg, ours, baselines


def prepare_root(root: Path) -> None:
    """Start from an empty lakehouse root: wipe one this script made, refuse any other non-empty one."""
    if root.exists():
        if (root / MARKER).is_file():
            shutil.rmtree(root)
        elif root.is_dir() and any(root.iterdir()):
            raise UsageError(f"lakehouse root {root} is not empty and was not made by this benchmark: "
                             "pass an empty or new folder with --root")
        elif not root.is_dir():
            raise UsageError(f"lakehouse root {root} exists and is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("made by bench/quality.py; wiped at the start of each run\n")


# --- output ------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    cols = ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR")
    lines = [f"Test split ({result['data'].get('evaluated_users', '?')} users), full-catalogue ranking "
             f"of {result['data'].get('items', '?')} items, history masked",
             f"  {'scorer':<22}" + "".join(f"{c:>9}" for c in cols)]
    for name, m in result["metrics"].items():
        lines.append(f"  {name:<22}" + "".join(f"{m.get(k, float('nan')):>9.4f}" for k in METRIC_KEYS))
    pub = result.get("published")
    if pub:
        cells = "".join(f"{pub[k]:>9.4f}" if isinstance(pub.get(k), float) else f"{'-':>9}" for k in METRIC_KEYS)
        lines.append(f"  {('published ' + pub['model'].split(' (')[0])[:22]:<22}{cells}")
    t = result["training"]
    lines += ["",
              f"training: {t['epochs_run']} epochs run (stopped by {t.get('stopped_by')}), best epoch {t['best_epoch']} "
              f"(validation NDCG@10 {t['best_val_ndcg_at_10']:.4f}), loop {t['train_seconds']:.0f}s, "
              f"train stage {t['stage_seconds']:.0f}s, world size {t.get('world_size')}"]
    if t.get("history"):
        lines.append("  epoch  train_loss  val_NDCG@10  val_HR@10  seconds")
        for h in t["history"]:
            lines.append(f"  {h['epoch']:>5}  {h['train_loss']:>10.4f}  {h['val_ndcg_at_10']:>11.4f}"
                         f"  {h['val_hr_at_10']:>9.4f}  {h['seconds']:>7.0f}")
    lines.append("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result["timings_seconds"].items()))
    m = result["machine"]
    lines.append(f"machine: {m['nproc']} cores, {m['cpu_model']}, load average at start {result['loadavg']['start']}"
                 f" / end {result['loadavg']['end']}")
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/quality.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="the dataset file, e.g. ../shared/datasets/amazon_beauty.txt")
    p.add_argument("--format", dest="fmt", default="sequences", choices=("sequences", "diginetica", "csv"),
                   help="its format (see recsys.ingest.adapters); default sequences")
    p.add_argument("--out", default=None, help="the JSON file to write; default bench/results/<dataset stem>.json")
    p.add_argument("--root", default=None,
                   help="scratch lakehouse root; default /tmp/recsys-bench/<dataset stem> (wiped at start)")
    p.add_argument("--config", default=str(REPO / "conf" / "local.yaml"), help="config overlay; default conf/local.yaml")
    p.add_argument("--resume", action="store_true",
                   help="keep the lakehouse root and reuse the stages an earlier run of the same command finished "
                        "(after a failure in a later stage)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. model.hidden=128")
    return p.parse_intermixed_args(argv)


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    dataset = Path(args.dataset).expanduser()
    if not dataset.is_file():
        raise UsageError(f"dataset file {dataset} does not exist" if not dataset.exists()
                         else f"dataset path {dataset} is not a file")
    root = Path(args.root or Path("/tmp/recsys-bench") / dataset.stem).expanduser().resolve()
    out_path = Path(args.out or REPO / "bench" / "results" / f"{dataset.stem}.json").expanduser()

    from recsys.config import ConfigError

    try:
        cfg, ours, baselines = build_config(args.config, root, args.overrides)
    except ConfigError as e:
        raise UsageError(str(e)) from e
    if cfg.lakehouse.root_path != root:  # the user overrode lakehouse.root: use theirs
        root = cfg.lakehouse.root_path
    if args.resume:
        if not (root / MARKER).is_file():
            raise UsageError(f"--resume: {root} holds no earlier benchmark run")
    else:
        prepare_root(root)

    from recsys.cli import configure_logging

    configure_logging()
    from recsys.evaluation.evaluate import evaluate
    from recsys.features.profiles import build_profiles
    from recsys.ingest.adapters import import_dataset
    from recsys.ingest.pipeline import ingest
    from recsys.spark import get_spark
    from recsys.training.launch import train

    started = dt.datetime.now(dt.timezone.utc)
    load_start = loadavg()
    timings: dict[str, float] = {}

    state_path = root / STATE
    state: dict[str, Any] = {"timings": {}, "results": {}}
    if args.resume and state_path.is_file():
        state = json.loads(state_path.read_text())
    resumed: list[str] = []

    def stage(name: str, fn, *a, **kw):
        if name in state["results"] and name in state["timings"]:  # finished by an earlier run (--resume)
            timings[name] = state["timings"][name]
            resumed.append(name)
            print(f"[bench] {name}: reusing the result of an earlier run ({timings[name]:.1f}s then)", flush=True)
            return state["results"][name]
        print(f"[bench] {name} ...", flush=True)
        t = time.time()
        out = fn(*a, **kw)
        timings[name] = round(time.time() - t, 1)
        print(f"[bench] {name} done in {timings[name]:.1f}s", flush=True)
        if name in RESUMABLE:
            state["timings"][name], state["results"][name] = timings[name], out
            state_path.write_text(json.dumps(state, indent=2, default=str))
        return out

    imported = stage("import", import_dataset, str(dataset), cfg.lakehouse.landing_path, args.fmt)
    spark = stage("spark_start", get_spark, cfg)
    ingested = stage("ingest", ingest, spark, cfg, full=True)
    profiles = stage("build_profiles", build_profiles, spark, cfg)
    trained = stage("train", train, spark, cfg)
    evaluated = stage("evaluate", evaluate, spark, cfg, split="test")

    metrics_raw = evaluated["metrics"]
    names = [n for n in SCORER_ORDER if n in metrics_raw] + [n for n in metrics_raw if n not in SCORER_ORDER]
    metrics = {n: {k: metrics_raw[n][k] for k in METRIC_KEYS if k in metrics_raw[n]} for n in names}
    evaluated_users = next((int(m["users"]) for m in metrics_raw.values() if "users" in m), None)

    result: dict[str, Any] = {
        "benchmark": "quality",
        "dataset": {"path": str(dataset.resolve()), "name": dataset.stem, "format": args.fmt},
        "started_at": started.isoformat(),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, "bench/quality.py", *argv]),
        "config_overrides": {"bench": ours, "user": list(args.overrides), "config_file": args.config},
        "baselines_requested": list(WANTED_BASELINES),
        "config": cfg.to_flat_dict(),
        "lakehouse_root": str(root),
        "protocol": f"leave-one-out: last item test, second-to-last validation; full catalogue ranked; "
                    f"evaluation.protocol={cfg.evaluation.protocol.value} (history_masked: every history item "
                    f"masked, a repeated target a miss); ties counted against the target",
        "data": {
            "users": imported.get("users"),
            "items": imported.get("items"),
            "interactions": imported.get("events"),
            "user_profiles": profiles.get("user_profiles"),
            "item_profiles": profiles.get("item_profiles"),
            "training_examples": profiles.get("training_examples"),
            "evaluated_users": evaluated_users,
            "import": imported,
            "ingest": {k: v for k, v in ingested.items() if isinstance(v, (dict, int, float, str))},
        },
        "metrics": metrics,
        "training": {
            "train_seconds": trained.get("train_seconds"),
            "stage_seconds": timings["train"],
            "epochs_run": trained.get("epochs_run"),
            "stopped_by": trained.get("stopped_by"),
            "best_epoch": trained.get("best_epoch"),
            "best_val_ndcg_at_10": trained.get("best_val_ndcg_at_10"),
            "world_size": trained.get("world_size"),
            "train_rows": trained.get("train_rows"),
            "log_model_seconds": trained.get("log_model_seconds"),
            "run_id": trained.get("run_id"),
            "model_version": trained.get("model_version"),
            "history": trained.get("history"),
        },
        "evaluation": {"split": evaluated.get("split"), "model_uri": evaluated.get("model_uri"),
                       "mlflow_run_id": evaluated.get("mlflow_run_id")},
        "timings_seconds": timings,
        "resumed_stages": resumed,
        "total_seconds": round(sum(timings.values()), 1),
        "machine": machine_info(),
        "loadavg": {"start": load_start, "end": loadavg()},
        "versions": versions(),
        "published": published_for(dataset),
    }
    if set(WANTED_BASELINES) - set(baselines):
        result["note"] = f"baselines not supported by this checkout: {sorted(set(WANTED_BASELINES) - set(baselines))}"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(render(result))
    print(f"\nResults written to {out_path}")
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        run(args, argv)
    except UsageError as e:
        print(f"bench/quality.py: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a stage failed: the traceback, then one line saying so
        import traceback

        traceback.print_exc()
        print(f"bench/quality.py: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
