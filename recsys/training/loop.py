"""The function each ``TorchDistributor`` rank runs: DDP training with early stopping.

Everything it needs arrives in one picklable ``TrainJob``; torch, petastorm and mlflow are
imported inside, as the distributor requires. Only rank 0 talks to MLflow.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from recsys.config import ModelConfig, TrainConfig, TrackingConfig
from recsys.models.base import Catalogue


@dataclass
class TrainJob:
    """One picklable bundle for every rank: the resolved, frozen ``train`` and ``model``
    configs as they are, plus only what the driver derived from the data."""

    train: TrainConfig
    model: ModelConfig
    catalogue: Catalogue  # sizes and per-item features of item_profiles
    max_len: int  # features.max_seq_len: the length of the input sequences
    train_set: Any  # ShardedExamples
    validation_set: Any  # ShardedExamples
    num_negatives: int = 0  # the loss's sampled negatives for this catalogue (0 = full softmax), see sampled_negatives
    item_target_counts: list[int] | None = None  # (N+1,): the mixed sampler's log-Q correction
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # model_name and challenger_alias to register under
    tracking_uri: str = ""
    run_id: str = ""  # "" = no MLflow: nothing logged or registered
    item_ids: list[str | None] | None = None  # (N+1,) raw item id of each item_idx: the served model's vocabulary
    checkpoint_dir: str = ""  # where rank 0 writes a checkpoint after every epoch ("" = none); see checkpoints
    resume: bool = False  # continue from the checkpoint in checkpoint_dir
    warm_state: dict | None = None  # initial weights (a warm start from the champion), else random
    rules: Any = None  # recsys.scoring.ranking.ItemRules the served model applies (None: no rules)

    @property
    def max_seconds(self) -> float:
        """The time budget in seconds (0 = no limit)."""
        return self.train.max_minutes * 60.0


TIME_CHECK_STEPS = 8  # how often (in steps) the ranks agree on whether the time budget is spent


def fitted_schedule_steps(step: int, elapsed: float, max_seconds: float, planned: int) -> int:
    """The schedule's length in steps when it is fitted to a time budget: the ``step`` steps
    taken in ``elapsed`` seconds (validations included) and as many more as the ``max_seconds``
    left allow at that pace, never more than the ``planned`` steps nor fewer than those taken."""
    if step <= 0 or max_seconds <= 0:
        return planned
    more = int(max(0.0, max_seconds - elapsed) / (elapsed / step))
    return max(step, min(planned, step + more))


def _lr_at(step: int, tc: TrainConfig, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak rate."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    progress = min(1.0, (step - tc.warmup_steps) / max(1, total - tc.warmup_steps))
    return tc.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def future_targets(targets, share: float, window: int, generator=None):
    """Replace a ``share`` of the (B, L) left-padded next-item ``targets`` by the item of a
    later step: position t gets the target of position t + j, j uniform in [0, w) where w is
    ``window`` or the number of steps left. Every position keeps a real target (the targets
    of a row are contiguous up to its last column); j = 0 is the next item itself.

    Trains each position on what the user does in the next few steps, not only the very next
    one: the order of a history matters less in some shops (check-ins, say) than in others.
    """
    import torch

    if share <= 0 or window <= 1:
        return targets
    B, L = targets.shape
    pos = torch.arange(L)
    span = (L - pos).clamp_max(window)  # (L,) steps available from each position
    offset = (torch.rand(B, L, generator=generator) * span).long()
    pick = torch.where(torch.rand(B, L, generator=generator) < share, pos + offset, pos)
    return torch.where(targets != 0, targets.gather(1, pick), targets)


class WeightAverage:
    """An exponential moving average of a model's parameters (Polyak averaging).

    After each optimiser step the average moves towards the weights by 1 - d, with
    d = min(decay, (1 + n) / (10 + n)) at the n-th update, so that the first updates are not
    tied to the random initial weights. ``swapped()`` puts the average into the model for a
    validation or a checkpoint and restores the trained weights afterwards. Under DDP every
    rank holds the same weights after each step, so every rank holds the same average.
    """

    def __init__(self, params, decay: float) -> None:
        self.params = list(params)
        self.values = [p.detach() for p in self.params]  # views that follow the in-place steps
        self.shadow = [v.clone() for v in self.values]
        self.decay = decay
        self.updates = 0

    def update(self) -> None:
        import torch

        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            torch._foreach_lerp_(self.shadow, self.values, 1.0 - d)

    @contextlib.contextmanager
    def swapped(self):
        import torch

        with torch.no_grad():
            trained = [p.detach().clone() for p in self.params]
            for p, a in zip(self.params, self.shadow):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, t in zip(self.params, trained):
                    p.copy_(t)


def length_bucketed(stream, pool: int, seed: int):
    """Re-batch an endless stream of batches: pool ``pool`` of them, sort their rows by
    sequence length (random among equal lengths), split into batches of the same sizes and
    yield those in random order. Batches of similar length lose little to padding.

    Give every rank the same ``seed``: the order is then the same permutation of each rank's
    sorted pool, so at every step all ranks take batches of matching length. DDP waits for
    the slowest rank at each step; with a seed per rank a short batch on one rank met a long
    one on the other, and a step cost about 1.5× the mean of the two (Yelp's lengths)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    while True:
        got = [next(stream) for _ in range(pool)]
        rows = {k: torch.cat([b[k] for b in got]) for k in got[0]}
        length = (rows["input_items"] != 0).sum(1).double()
        order = torch.argsort(length + torch.rand(len(length), generator=gen, dtype=torch.float64))
        parts = torch.split(order, [len(b["input_items"]) for b in got])
        for i in torch.randperm(len(parts), generator=gen).tolist():
            yield {k: v[parts[i]] for k, v in rows.items()}


def train_worker(job: TrainJob) -> dict:
    """Run on every rank. Returns the training summary (rank 0's reaches the driver)."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from recsys.metrics import metric_sums, target_ranks
    from recsys.models import build_model
    from recsys.models.sasrec import trim_padding
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # petastorm on pyarrow 14
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    tc = job.train
    gpu = tc.use_gpu and torch.cuda.is_available()
    distributed = world > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if gpu else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if gpu else "cpu")
    torch.set_num_threads(tc.torch_threads)
    torch.manual_seed(tc.seed)  # same init on every rank; DDP also broadcasts rank 0's weights

    from recsys.training import checkpoints

    model = build_model(job.model, job.catalogue, job.max_len)
    resumed = checkpoints.load(job.checkpoint_dir) if job.resume and job.checkpoint_dir else None
    if job.resume and resumed is None:
        raise RuntimeError(f"no checkpoint to resume from in {job.checkpoint_dir}")
    if resumed is not None:
        model.load_state_dict(resumed["model"])
    elif job.warm_state is not None:
        model.load_state_dict(job.warm_state)
    model = model.to(device)
    # From here on each rank draws its own dropout masks and sampled negatives: with one seed
    # the ranks' equal-length batches got identical masks and identical negatives.
    torch.manual_seed(tc.seed + 1 + rank)
    model.num_negatives = job.num_negatives
    model.mask_history = tc.mask_history
    if job.item_target_counts is not None:
        from recsys.models.sasrec import target_log_share

        model.item_log_share = target_log_share(torch.tensor(job.item_target_counts, dtype=torch.long),
                                                model.spec.num_items, counts=True).to(device)
    net = DDP(model) if distributed else model
    average = WeightAverage(model.parameters(), tc.ema_decay) if tc.ema_decay > 0 else None
    # fused: one kernel for all parameters; on the CPU a step took 9 ms instead of 54 ms
    # (mostly the item embeddings, which the full softmax gives a dense gradient).
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.98),
                            fused=True)
    # batch_size is the global batch, so the optimisation (and the learning rate that suits
    # it) does not change with the number of processes.
    rank_batch = max(1, tc.batch_size // world)  # the config requires a multiple of world
    steps_per_epoch = max(1, math.ceil(job.train_set.rows / tc.batch_size))
    total_steps = steps_per_epoch * tc.epochs
    schedule_steps = total_steps  # the learning-rate decay's length (train.fit_schedule_to_budget refits it)
    precision = tc.precision.value
    bf16 = gpu and (precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()))

    mlflow = None
    if rank == 0 and job.run_id:
        import mlflow as _mlflow

        _mlflow.set_tracking_uri(job.tracking_uri)
        # The registry too: this process may have inherited MLFLOW_REGISTRY_URI from a driver
        # that pointed elsewhere when Spark started its Python workers.
        _mlflow.set_registry_uri(job.tracking_uri)
        mlflow = _mlflow
        mlflow.start_run(run_id=job.run_id)

    def loss_fn(batch: dict) -> torch.Tensor:
        # Called through the DDP wrapper (when there is one) so its gradient all-reduce fires.
        items, types, targets = trim_padding(batch["input_items"], batch["input_types"], batch["target_items"])
        targets = future_targets(targets, tc.future_share, tc.future_window)
        with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            return net(items.to(device), types.to(device), targets.to(device))

    def validate() -> tuple[float, float]:
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64)
        with torch.no_grad():
            for b in job.validation_set.batches(512, rank, world, endless=False, shuffle=False):
                items, types = trim_padding(b["input_items"], b["input_types"])
                items = items.to(device)
                scores = model(items, types.to(device))
                # Early stopping selects on the headline protocol: the input steps are masked
                # and a target among them is a miss (see target_ranks). The petastorm rows
                # carry the last max_len steps only, so older repeats are not masked here.
                mask = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, items, True)
                sums += metric_sums(target_ranks(scores, b["target"].to(device), mask).cpu(), 10)
        if distributed:  # on the device: NCCL reduces GPU tensors only
            sums = sums.to(device)
            dist.all_reduce(sums)
            sums = sums.cpu()
        model.train()
        n = max(sums[2].item(), 1.0)
        return sums[1].item() / n, sums[0].item() / n

    history: list[dict] = []
    best = {"ndcg": -1.0, "epoch": 0, "state": None}
    step, bad_epochs, first_epoch, elapsed_before = 0, 0, 1, 0.0
    if resumed is not None:
        opt.load_state_dict(resumed["optimizer"])
        if average is not None and resumed.get("average") is not None:
            for a, v in zip(average.shadow, resumed["average"]):
                a.copy_(v)
            average.updates = resumed["average_updates"]
        history, best, bad_epochs = resumed["history"], resumed["best"], resumed["bad_epochs"]
        step, first_epoch, elapsed_before = resumed["step"], resumed["epoch"] + 1, resumed["elapsed"]
        schedule_steps = resumed.get("schedule_steps", total_steps)
        if rank < len(resumed["rng"]):
            torch.set_rng_state(resumed["rng"][rank])

    def checkpoint(epoch: int) -> None:
        """Every rank hands over its RNG state; rank 0 writes the checkpoint."""
        rngs = [torch.get_rng_state()]
        if distributed:
            rngs = [None] * world
            dist.all_gather_object(rngs, torch.get_rng_state())
        if rank == 0:
            state = {"epoch": epoch, "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                     "average": average.shadow if average is not None else None,
                     "average_updates": average.updates if average is not None else 0,
                     "best": best, "bad_epochs": bad_epochs, "history": history,
                     "elapsed": time.time() - t0, "rng": rngs, "schedule_steps": schedule_steps}
            checkpoints.save(job.checkpoint_dir, state, {"epoch": epoch, "step": step, "best_epoch": best["epoch"],
                                                         "best_val_ndcg_at_10": best["ndcg"]})
    def out_of_time(reserve: float) -> bool:
        """True when the budget, less ``reserve`` seconds kept for a validation, is spent."""
        over = torch.tensor([float(time.time() - t0 + reserve >= job.max_seconds)], device=device)
        if distributed:  # on the device: NCCL reduces GPU tensors only
            dist.all_reduce(over, op=dist.ReduceOp.MAX)  # every rank stops at the same step
        return bool(over.item())

    t0, stopped_by = time.time() - elapsed_before, "epochs"
    validate_seconds = 0.0  # the last validation's duration, kept free at the end of the budget
    stream = job.train_set.batches(rank_batch, rank, world, endless=True, shuffle=True, seed=tc.seed)
    batches = length_bucketed(stream, tc.length_buckets, tc.seed) if tc.length_buckets > 0 else stream
    try:
        for epoch in range(first_epoch, tc.epochs + 1):
            model.train()
            loss_sum, n, t_epoch = 0.0, 0, time.time()
            for i in range(steps_per_epoch):
                # The time budget ends training mid-epoch, every TIME_CHECK_STEPS steps (one
                # all-reduce of a flag), leaving room for the last epoch's validation.
                if job.max_seconds > 0 and step > 0 and i % TIME_CHECK_STEPS == 0 and out_of_time(validate_seconds):
                    stopped_by = "time"
                    break
                batch = next(batches)
                for g in opt.param_groups:
                    g["lr"] = _lr_at(step, tc, schedule_steps)
                loss = loss_fn(batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                if average is not None:
                    average.update()
                loss_sum += loss.item()
                n += 1
                step += 1
            if n == 0:  # the budget ran out on this epoch's first step: nothing new to validate
                break
            t_val = time.time()
            examples_per_second = n * rank_batch * world / max(t_val - t_epoch, 1e-9)
            # With a weight average, it is what is validated and kept.
            with average.swapped() if average is not None else contextlib.nullcontext():
                ndcg, hr = validate()
                improved = ndcg > best["ndcg"]
                if improved:
                    best = {"ndcg": ndcg, "epoch": epoch,
                            "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            validate_seconds = time.time() - t_val
            rec = {"epoch": epoch, "train_loss": loss_sum / n, "val_ndcg_at_10": ndcg, "val_hr_at_10": hr,
                   "seconds": time.time() - t0, "steps": n, "examples_per_second": examples_per_second,
                   "lr": opt.param_groups[0]["lr"]}
            history.append(rec)
            if mlflow is not None:
                mlflow.log_metrics({k: v for k, v in rec.items() if k != "epoch"}, step=epoch)
            bad_epochs = 0 if improved else bad_epochs + 1
            if tc.fit_schedule_to_budget and job.max_seconds > 0:
                # Every rank must follow one schedule: the slowest rank's estimate wins.
                fit = torch.tensor([fitted_schedule_steps(step, time.time() - t0, job.max_seconds, total_steps)],
                                   dtype=torch.long, device=device)
                if distributed:
                    dist.all_reduce(fit, op=dist.ReduceOp.MIN)
                schedule_steps = int(fit.item())
            if job.checkpoint_dir:
                checkpoint(epoch)
            if stopped_by == "time":
                break
            if bad_epochs >= tc.patience:  # same decision on every rank: ndcg was all-reduced
                stopped_by = "patience"
                break
    finally:
        stream.close()

    summary: dict[str, Any] = {
        "epochs_run": len(history),
        "resumed_from_epoch": first_epoch - 1 if resumed is not None else None,
        "precision": "bf16" if bf16 else "fp32",
        "device": str(device),
        "stopped_by": stopped_by,
        "rank_batch_size": rank_batch,
        "best_epoch": best["epoch"],
        "best_val_ndcg_at_10": best["ndcg"],
        "train_seconds": time.time() - t0,
        "schedule_steps": schedule_steps,
        "history": history,
        "world_size": world,
    }
    if best["state"] is None:
        raise RuntimeError("training ended before its first validation: raise train.max_minutes or train.epochs")
    if rank == 0:
        model.load_state_dict(best["state"])
        model.cpu().eval()
        if mlflow is not None:
            t_log = time.time()
            summary.update(_log_model(mlflow, model, job, summary))
            summary["log_model_seconds"] = time.time() - t_log
            mlflow.end_run()
    if distributed:
        # Every rank returns rank 0's summary: with local_mode=True each rank writes the result
        # file and the last one wins, and only rank 0 knows the registered version.
        shared = [summary if rank == 0 else None]
        dist.broadcast_object_list(shared, src=0, device=device if gpu else None)
        summary = shared[0]
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _log_model(mlflow, model, job: TrainJob, summary: dict) -> dict:
    """Log the best model to the run, register it and point the challenger alias at the new
    version (``recsys promote`` decides whether it becomes the champion)."""
    mlflow.log_metrics({"best_val_ndcg_at_10": summary["best_val_ndcg_at_10"], "best_epoch": summary["best_epoch"],
                        "train_seconds": summary["train_seconds"], "epochs_run": summary["epochs_run"]})
    mlflow.set_tag("stopped_by", summary["stopped_by"])
    mlflow.log_dict(model.spec.to_dict(), "model_spec.json")
    import tempfile
    from pathlib import Path

    from recsys.models.serving import log_recommender

    item_ids = job.item_ids or [None, *map(str, range(1, model.spec.num_items + 1))]
    with tempfile.TemporaryDirectory(prefix="recsys-model-") as tmp:
        info = log_recommender(model, item_ids, job.tracking.model_name, Path(tmp), rules=job.rules)
    out = {"model_uri": info.model_uri, "run_id": job.run_id}
    version = getattr(info, "registered_model_version", None)
    if job.tracking.model_name and version is not None:
        client = mlflow.MlflowClient()
        client.set_registered_model_alias(job.tracking.model_name, job.tracking.challenger_alias, version)
        out["model_version"] = str(version)
    return out
