"""Training throughput: examples per second for the default model on one dataset.

    python bench/train_throughput.py --dataset ../shared/datasets/amazon_beauty.txt
                                     [--steps 300] [--minutes 1.5] [--out bench/results/train-throughput.json]
                                     [--gpu] [key=value ...]

The dataset goes through the project's own stages into a scratch lakehouse (import → ingest →
build-profiles), then three measurements of the same model, global batch size and threads:

(a) the limit: a plain single-process PyTorch loop over in-memory tensors (the training rows
    read once into memory), the same model, global batch, threads, loss, optimiser, gradient
    clipping and length bucketing (batches pooled and sorted by length, padding cut), ``--steps`` steps;
(b) the real path: Delta → petastorm → TorchDistributor, 1 process;
(c) the real path with 2 processes, one thread each.

(b) and (c) run the stage ``train`` with a time budget of ``--minutes`` and report the loop's
own per-epoch ``examples_per_second`` (training steps and their data loading; the validation
and the start-up of the distributed job are not in it), the best of the epochs.

``--gpu`` (``bench/gpu_check.sh``): the real path on the GPUs instead (one process per GPU,
``train.use_gpu=true``, ``train.local_mode=true``), once in fp32 and once with bf16 autocast,
reporting examples/s and the validation NDCG@10 reached in the budget.

Prints a table and writes JSON with the figures, the machine and the command line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any


REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def plain_loop(spark, cfg, steps: int) -> dict[str, Any]:
    """(a): the same model, loss and optimiser step over in-memory tensors, one process."""
    import torch

    from recsys.models import build_model
    from recsys.models.sasrec import trim_padding
    from recsys.tables import read_table
    from recsys.training.launch import item_catalogue, sampled_negatives
    from recsys.training.loop import future_targets, length_bucketed

    tc = cfg.train
    torch.set_num_threads(tc.torch_threads)
    rows = read_table(spark, cfg, "training_examples").where("split = 'train'").select(
        "input_items", "input_types", "target_items").toPandas()
    items = torch.tensor(rows["input_items"].tolist(), dtype=torch.long)
    types = torch.tensor(rows["input_types"].tolist(), dtype=torch.long)
    targets = torch.tensor(rows["target_items"].tolist(), dtype=torch.long)
    catalogue = item_catalogue(spark, cfg)
    torch.manual_seed(tc.seed)
    model = build_model(cfg.model, catalogue, cfg.features.max_seq_len)
    model.num_negatives = sampled_negatives(tc, catalogue.num_items)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.98), fused=True)
    gen = torch.Generator().manual_seed(tc.seed)

    def shuffled():  # endless random batches, as petastorm's shuffled stream gives them
        while True:
            order = torch.randperm(len(items), generator=gen)
            for s in range(0, len(order) - tc.batch_size + 1, tc.batch_size):
                idx = order[s:s + tc.batch_size]
                yield {"input_items": items[idx], "input_types": types[idx], "target_items": targets[idx]}

    batches = length_bucketed(shuffled(), tc.length_buckets, tc.seed) if tc.length_buckets > 0 else shuffled()

    def step(n: int) -> None:
        b = next(batches)
        i, t, y = trim_padding(b["input_items"], b["input_types"], b["target_items"])
        loss = model(i, t, future_targets(y, tc.future_share, tc.future_window))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for n in range(10):  # warm-up
        step(n)
    t0 = time.time()
    for n in range(steps):
        step(n)
    seconds = time.time() - t0
    return {"steps": steps, "seconds": round(seconds, 2), "examples_per_second": round(steps * tc.batch_size / seconds, 1),
            "rows": len(items), "threads": tc.torch_threads}


def real_path(spark, cfg, processes: int, minutes: float, *extra: str) -> dict[str, Any]:
    """(b)/(c): the train stage with ``processes`` processes for ``minutes``."""
    from recsys.config import replace
    from recsys.training.launch import train

    run_cfg = replace(cfg, f"train.num_processes={processes}", f"train.max_minutes={minutes}", "train.epochs=1000",
                      "train.patience=1000", *extra)
    t0 = time.time()
    summary = train(spark, run_cfg)
    history = summary["history"]
    full = [h for h in history if h["steps"] * run_cfg.train.batch_size >= 0.9 * summary["train_rows"]] or history
    return {"processes": processes, "threads_per_process": run_cfg.train.torch_threads,
            "examples_per_second": round(max(h["examples_per_second"] for h in full), 1),
            "epochs": len(history), "best_val_ndcg_at_10": round(summary["best_val_ndcg_at_10"], 4),
            "stage_seconds": round(time.time() - t0, 1), "precision": summary.get("precision"),
            "device": summary.get("device"), "run_id": summary["run_id"]}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="bench/train_throughput.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--root", default="/tmp/recsys-bench/throughput")
    p.add_argument("--steps", type=int, default=300, help="steps of the plain loop (a)")
    p.add_argument("--minutes", type=float, default=1.5, help="time budget of each real-path run")
    p.add_argument("--gpu", action="store_true", help="the GPU check: fp32 vs bf16 on every GPU")
    p.add_argument("--out", default=None)
    p.add_argument("--reuse", action="store_true", help="keep the lakehouse an earlier run of this script built")
    p.add_argument("--parts", default="a,b,c", help="which measurements (CPU): any of a, b, c")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    dataset = Path(args.dataset).expanduser()
    if not dataset.is_file():
        print(f"bench/train_throughput.py: error: dataset file {dataset} does not exist", file=sys.stderr)
        return 2
    from quality import loadavg, machine_info, prepare_root, versions

    from recsys.cli import configure_logging
    from recsys.config import load_config
    from recsys.features.profiles import build_profiles
    from recsys.ingest.adapters import import_dataset
    from recsys.ingest.pipeline import ingest
    from recsys.spark import get_spark

    configure_logging()
    root = Path(args.root).resolve()
    reuse = args.reuse and (root / "gold" / "training_examples").is_dir()
    if not reuse:
        prepare_root(root)
    cfg = load_config(REPO / "conf" / "local.yaml", [f"lakehouse.root={root}", *args.overrides])
    spark = get_spark(cfg)
    if not reuse:
        import_dataset(str(dataset), cfg.lakehouse.landing_path, "sequences")
        ingest(spark, cfg, full=True)
        build_profiles(spark, cfg)
    load_before = loadavg()
    result: dict[str, Any] = {"benchmark": "train_throughput", "dataset": dataset.stem,
                              "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                              "batch_size": cfg.train.batch_size, "model": {"hidden": cfg.model.hidden,
                                                                            "blocks": cfg.model.blocks}}
    if args.gpu:
        import torch

        gpus = torch.cuda.device_count()
        if gpus == 0:
            print("bench/train_throughput.py: error: --gpu but torch sees no GPU", file=sys.stderr)
            return 2
        result["gpus"] = [torch.cuda.get_device_name(i) for i in range(gpus)]
        gpu = ("train.use_gpu=true", "train.local_mode=true")
        result["fp32"] = real_path(spark, cfg, gpus, args.minutes, *gpu, "train.precision=fp32")
        result["bf16"] = real_path(spark, cfg, gpus, args.minutes, *gpu, "train.precision=bf16")
        result["bf16_over_fp32"] = round(result["bf16"]["examples_per_second"] / result["fp32"]["examples_per_second"], 2)
    else:
        parts = set(args.parts.split(","))
        if "a" in parts:
            result["a_plain_loop"] = plain_loop(spark, cfg, args.steps)
        if "b" in parts:
            result["b_one_process"] = real_path(spark, cfg, 1, args.minutes)
        if "c" in parts:
            result["c_two_processes"] = real_path(spark, cfg, 2, args.minutes)
        ex = {k: result[k]["examples_per_second"] for k in ("a_plain_loop", "b_one_process", "c_two_processes")
              if k in result}
        if {"a_plain_loop", "b_one_process"} <= set(ex):
            result["b_over_a"] = round(ex["b_one_process"] / ex["a_plain_loop"], 2)
        if {"b_one_process", "c_two_processes"} <= set(ex):
            result["c_over_b"] = round(ex["c_two_processes"] / ex["b_one_process"], 2)
    result.update(machine=machine_info(), versions=versions(), loadavg_before=load_before, loadavg_after=loadavg(),
                  command="python " + " ".join(shlex.quote(x) for x in ["bench/train_throughput.py", *argv]))
    out = Path(args.out or REPO / "bench" / "results" / ("gpu-check.json" if args.gpu else "train-throughput.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for key in ("a_plain_loop", "b_one_process", "c_two_processes", "fp32", "bf16"):
        if key in result:
            print(f"{key:<16} {result[key]['examples_per_second']:>10,.0f} examples/s  "
                  + (f"(val NDCG@10 {result[key]['best_val_ndcg_at_10']})" if "best_val_ndcg_at_10" in result[key] else ""))
    for key in ("b_over_a", "c_over_b", "bf16_over_fp32"):
        if key in result:
            print(f"{key:<16} {result[key]:>10}")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
