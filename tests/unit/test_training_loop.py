"""The training loop's batching: length buckets that keep DDP ranks in step."""

import torch

from recsys.training.loop import length_bucketed


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
