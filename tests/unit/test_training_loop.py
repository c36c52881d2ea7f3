"""The training loop: length buckets that keep DDP ranks in step, the time budget, the
weight average, future targets, training on mixed negatives and on the history-masked loss."""

import math

import pytest
import torch

from recsys.config import ModelConfig, TrainConfig
from recsys.models import Catalogue
from recsys.training.loop import (TIME_CHECK_STEPS, TrainJob, WeightAverage, fitted_schedule_steps, future_targets,
                                 length_bucketed, train_worker)


def _stream(lengths: torch.Tensor, batch: int):
    """An endless stream of left-padded batches whose rows have the given lengths, in order;
    each row's first real value is its row number, so rows can be traced."""
    cols = torch.arange(50)
    for start in range(0, 10**9, batch):
        row = torch.arange(start, start + batch)
        n = lengths[row % len(lengths)]
        items = torch.where(cols >= 50 - n[:, None], 7, 0)
        items[torch.arange(batch), 50 - n] = row + 1
        yield {"input_items": items, "target_items": items.clone()}


def test_length_buckets_keep_every_row_once_and_sort_within_the_pool():
    lengths = torch.randint(1, 51, (64 * 4,), generator=torch.Generator().manual_seed(0))
    out = length_bucketed(_stream(lengths, 64), pool=4, seed=1)
    batches = [next(out) for _ in range(4)]  # exactly one pool
    ids = sorted(int(r[r != 0][0]) for b in batches for r in b["input_items"])
    assert ids == list(range(1, 64 * 4 + 1))
    assert all(torch.equal(b["input_items"], b["target_items"]) for b in batches)  # columns stay aligned
    spans = sorted(((b["input_items"] != 0).sum(1).min().item(), (b["input_items"] != 0).sum(1).max().item())
                   for b in batches)
    assert all(hi <= lo_next for (_, hi), (lo_next, _) in zip(spans, spans[1:]))  # no overlap: sorted


def test_ranks_with_the_same_seed_take_batches_of_matching_length():
    # Two ranks read different rows of the same skewed length distribution (as petastorm's
    # shards do); DDP makes each step as slow as the rank with more positions.
    gen = torch.Generator().manual_seed(3)
    lengths = torch.clamp((-torch.log(torch.rand(2 * 32 * 64 * 5, generator=gen)) / 0.12).long() + 1, max=50)
    half = len(lengths) // 2

    def cost_ratio(seed_a: int, seed_b: int) -> float:
        a = length_bucketed(_stream(lengths[:half], 64), 32, seed_a)
        b = length_bucketed(_stream(lengths[half:], 64), 32, seed_b)
        slowest = mean = 0.0
        for _ in range(32 * 5):
            pa, pb = ((next(s)["input_items"] != 0).sum().item() for s in (a, b))
            slowest, mean = slowest + max(pa, pb), mean + (pa + pb) / 2
        return slowest / mean

    assert cost_ratio(42, 42) < 1.1
    assert cost_ratio(42, 43) > 1.25  # what a seed per rank cost


class InMemoryExamples:
    """The ``ShardedExamples`` interface over tensors held in memory (one process, no Spark):
    enough to drive ``train_worker``'s loop directly."""

    def __init__(self, items: torch.Tensor, targets: torch.Tensor) -> None:
        self.items, self.targets, self.rows = items, targets, len(items)

    def batches(self, batch_size, rank, world, *, endless, shuffle, seed=0):
        while True:
            for s in range(0, self.rows, batch_size):
                items = self.items[s:s + batch_size]
                yield {"input_items": items, "input_types": (items != 0).long(), "target_items": self.targets[s:s + batch_size],
                       "target": self.targets[s:s + batch_size, -1]}
            if not endless:
                return


def _job(max_seconds: float, epochs: int = 3, num_negatives: int = 0, **train) -> TrainJob:
    gen = torch.Generator().manual_seed(0)
    seq = torch.randint(1, 21, (640, 9), generator=gen)
    data = InMemoryExamples(seq[:, :-1], seq[:, 1:])
    tc = TrainConfig(epochs=epochs, batch_size=16, lr=1e-3, weight_decay=0.0, warmup_steps=1, patience=10, seed=0,
                     torch_threads=1, use_gpu=False, max_minutes=max_seconds / 60.0, length_buckets=0,
                     future_share=0.0, future_window=1, **train)
    mc = ModelConfig(hidden=8, blocks=1, heads=1, dropout=0.0, side_features=False, text_features=False)
    zeros = [0] * 21
    catalogue = Catalogue(num_items=20, category=zeros, brand=zeros, price=zeros, num_categories=0, num_brands=0,
                          num_price_buckets=0)
    return TrainJob(train=tc, model=mc, catalogue=catalogue, max_len=8, train_set=data, validation_set=data,
                    num_negatives=num_negatives)


def test_time_budget_cuts_the_epoch_short_and_keeps_its_validation():
    summary = train_worker(_job(max_seconds=1e-6))  # spent before the first time check (step 8)
    assert (summary["epochs_run"], summary["stopped_by"], summary["best_epoch"]) == (1, "time", 1)
    [epoch] = summary["history"]
    assert epoch["steps"] == TIME_CHECK_STEPS < 640 // 16  # cut mid-epoch, then validated
    assert 0.0 <= epoch["val_ndcg_at_10"] <= 1.0


def test_without_a_budget_every_epoch_runs_in_full():
    summary = train_worker(_job(max_seconds=0.0, epochs=2))
    assert (summary["epochs_run"], summary["stopped_by"]) == (2, "epochs")
    assert [e["steps"] for e in summary["history"]] == [640 // 16] * 2


def test_the_fitted_schedule_ends_where_the_budget_does():
    # 100 steps in 50 s: 0.5 s a step, so 60 s more allow 120 more steps.
    assert fitted_schedule_steps(100, 50.0, 110.0, planned=1000) == 220
    assert fitted_schedule_steps(100, 50.0, 1e6, planned=1000) == 1000  # never beyond the plan
    assert fitted_schedule_steps(100, 120.0, 110.0, planned=1000) == 100  # over budget: the steps taken
    assert fitted_schedule_steps(0, 0.0, 110.0, planned=1000) == 1000  # nothing to measure yet


@pytest.mark.parametrize("fit", [True, False])
def test_a_budget_cut_run_decays_its_rate_only_when_the_schedule_is_fitted(fit):
    """2 seconds for 1000 epochs: the budget ends the run either way; fitted, the rate has
    (nearly) finished its decay to 10% of the peak by then, unfitted it is still near the peak."""
    summary = train_worker(_job(max_seconds=2.0, epochs=1000, fit_schedule_to_budget=fit))
    assert summary["stopped_by"] == "time" and summary["epochs_run"] >= 3
    last_lr, peak = summary["history"][-1]["lr"], 1e-3
    if fit:
        assert summary["schedule_steps"] < 1000 * 640 // 16
        assert last_lr < 0.3 * peak
    else:
        assert summary["schedule_steps"] == 1000 * 640 // 16
        assert last_lr > 0.9 * peak


def test_mixed_negatives_train_through_the_loop():
    """With item target counts the loop trains on the mixed sampled softmax (K=5 of 20 items):
    the loss falls and every epoch is validated."""
    job = _job(max_seconds=0.0, epochs=3, num_negatives=5)
    targets = job.train_set.targets
    job.item_target_counts = torch.bincount(targets[targets != 0], minlength=21).tolist()
    summary = train_worker(job)
    losses = [e["train_loss"] for e in summary["history"]]
    assert losses[-1] < losses[0]
    assert all(0.0 <= e["val_ndcg_at_10"] <= 1.0 for e in summary["history"])


def test_history_masked_loss_reaches_the_loop():
    """train.mask_history is what the loop trains on: the same job gives other losses
    without it, both finite although these histories repeat items all the time (20 items)."""
    losses = {}
    for masked in (True, False):
        summary = train_worker(_job(max_seconds=0.0, epochs=2, mask_history=masked))
        losses[masked] = [e["train_loss"] for e in summary["history"]]
    assert all(math.isfinite(v) for vs in losses.values() for v in vs)
    assert losses[True][0] != losses[False][0]


def test_weight_average_follows_the_weights_and_swaps_them_back():
    w = torch.nn.Parameter(torch.tensor([0.0, 10.0]))
    average = WeightAverage([w], decay=0.9)
    values = [torch.tensor([1.0, 10.0]), torch.tensor([3.0, 6.0]), torch.tensor([5.0, 2.0])]
    expected = torch.tensor([0.0, 10.0])
    for n, v in enumerate(values, 1):
        with torch.no_grad():
            w.copy_(v)
        average.update()
        d = min(0.9, (1 + n) / (10 + n))  # 2/11, 3/12, then 4/13
        expected = d * expected + (1 - d) * v
    assert torch.allclose(average.shadow[0], expected)
    with average.swapped():
        assert torch.allclose(w.detach(), expected)
    assert torch.equal(w.detach(), values[-1])  # the trained weights are back


def test_training_with_a_weight_average_validates_it():
    summary = train_worker(_job(max_seconds=0.0, epochs=3, ema_decay=0.99))
    assert (summary["epochs_run"], summary["stopped_by"]) == (3, "epochs")
    losses = [e["train_loss"] for e in summary["history"]]
    assert losses[-1] < losses[0]
    best = max(e["val_ndcg_at_10"] for e in summary["history"])
    assert summary["best_val_ndcg_at_10"] == best


def test_future_targets_draw_from_the_next_steps_within_the_window():
    targets = torch.tensor([[0, 0, 11, 12, 13, 14, 15], [0, 0, 0, 0, 0, 21, 22]])
    assert torch.equal(future_targets(targets, 0.0, 3), targets)
    assert torch.equal(future_targets(targets, 1.0, 1), targets)
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([future_targets(targets, 1.0, 3, gen) for _ in range(300)])  # (300, 2, 7)
    assert (draws[:, targets == 0] == 0).all()  # padding keeps no target
    for col in range(2, 7):
        seen = set(draws[:, 0, col].tolist())
        assert seen == set(targets[0, col:col + 3].tolist())  # itself and the next two, all drawn
    assert set(draws[:, 1, 5].tolist()) == {21, 22} and (draws[:, 1, 6] == 22).all()
    half = torch.stack([future_targets(targets, 0.5, 3, gen) for _ in range(2000)])
    moved = (half[:, 0, 2] != 11).double().mean().item()
    assert abs(moved - 0.5 * 2 / 3) < 0.05  # half are redrawn, and 2 of 3 redraws move


class CrashingExamples(InMemoryExamples):
    """The same rows, but the training stream dies after ``crash_after`` batches (a killed job)."""

    def __init__(self, items, targets, crash_after: int) -> None:
        super().__init__(items, targets)
        self.crash_after = crash_after

    def batches(self, batch_size, rank, world, *, endless, shuffle, seed=0):
        stream = super().batches(batch_size, rank, world, endless=endless, shuffle=shuffle, seed=seed)
        if not endless:  # validation
            yield from stream
            return
        for n, batch in enumerate(stream):
            if n == self.crash_after:
                raise RuntimeError("killed")
            yield batch


def test_a_crashed_run_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_one(tmp_path):
    from recsys.training import checkpoints

    whole = _job(max_seconds=0.0, epochs=4)
    whole.checkpoint_dir = str(tmp_path / "whole")
    expected = train_worker(whole)

    crashing = _job(max_seconds=0.0, epochs=4)
    crashing.checkpoint_dir = str(tmp_path / "crashed")
    data = crashing.train_set
    crashing.train_set = CrashingExamples(data.items, data.targets, crash_after=2 * 40 + 7)  # in epoch 3
    with pytest.raises(RuntimeError, match="killed"):
        train_worker(crashing)
    assert checkpoints.summary(crashing.checkpoint_dir)["epoch"] == 2

    crashing.train_set, crashing.resume = data, True
    resumed = train_worker(crashing)
    assert resumed["resumed_from_epoch"] == 2 and resumed["epochs_run"] == 4
    assert [e["epoch"] for e in resumed["history"]] == [1, 2, 3, 4]
    for a, b in zip(resumed["history"], expected["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_ndcg_at_10"] == pytest.approx(b["val_ndcg_at_10"], rel=1e-5)
    assert resumed["best_val_ndcg_at_10"] == pytest.approx(expected["best_val_ndcg_at_10"], rel=1e-5)
    assert checkpoints.summary(crashing.checkpoint_dir)["epoch"] == 4

    fresh = _job(max_seconds=0.0, epochs=4)
    fresh.checkpoint_dir, fresh.resume = str(tmp_path / "nothing-here"), True
    with pytest.raises(RuntimeError, match="no checkpoint to resume from"):
        train_worker(fresh)


def test_warm_state_keeps_the_shared_rows_and_gives_new_items_fresh_ones():
    from recsys.models import build_model
    from recsys.training.checkpoints import warm_state

    def net(n: int, seed: int):
        zeros = [0] * (n + 1)
        cat = Catalogue(num_items=n, category=zeros, brand=zeros, price=zeros, num_categories=0, num_brands=0,
                        num_price_buckets=0)
        torch.manual_seed(seed)
        return build_model(ModelConfig(hidden=8, blocks=1, heads=1, side_features=False, text_features=False), cat, 8)

    old, new = net(20, seed=1), net(25, seed=2)
    state, counts = warm_state(new, old.state_dict())
    new.load_state_dict(state)
    assert counts["rows"] >= 1 and counts["whole"] >= 1 and counts["fresh"] == 0
    for name, value in new.state_dict().items():
        before = old.state_dict()[name]
        if value.shape == before.shape:
            assert torch.equal(value, before), name
        else:  # the item rows: the 21 known ones carried over, the 5 new ones as initialised
            assert torch.equal(value[:21], before[:21]) and torch.equal(value[21:], net(25, seed=2).state_dict()[name][21:])


def test_the_epoch_line_says_where_training_is():
    from recsys.training.monitor import epoch_line

    line = epoch_line(3, 30, {"train_loss": 5.25, "val_ndcg_at_10": 0.0412, "val_hr_at_10": 0.07,
                              "examples_per_second": 1234.5, "lr": 0.002, "seconds": 90.0}, max_seconds=600)
    assert line == ("epoch 3/30  loss 5.2500  val NDCG@10 0.0412  HR@10 0.0700  1,234 ex/s  lr 2.00e-03  "
                    "elapsed 1m30s  ETA 8m30s")  # 27 epochs at 30 s would take 13.5 min; the budget ends first
