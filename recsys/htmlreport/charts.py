"""The report's charts: matplotlib figures (Agg backend) as inline SVG strings.

Each function takes plain Python lists (what :mod:`recsys.htmlreport.build` collected) and
returns an ``<svg …>`` element ready to be placed in the page as it is: no XML prolog, no
DOCTYPE, no metadata, text kept as text (small, and searchable in the page).
"""

from __future__ import annotations

import io
import re
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display: the report is built on drivers and in CI

import matplotlib.pyplot as plt  # noqa: E402

plt.rcParams.update({
    "svg.fonttype": "none",  # text as <text>, not glyph paths: a tenth of the size
    "svg.hashsalt": "recsys-report",  # the same ids for the same figure on every run
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
})

PALETTE = ("#2f6fb0", "#e07b39", "#4a9c5d", "#b8474a", "#7d5ba6", "#8c6d31", "#d46fb0", "#6b6b6b")
_PROLOG = re.compile(r"^.*?(?=<svg)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*|<!--.*?-->\s*", re.S)


def to_svg(fig) -> str:
    """``fig`` as an inline ``<svg>`` element (the figure is closed); metadata and comments
    (matplotlib's comments hold the TeX of tick labels) are dropped."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return _METADATA.sub("", _PROLOG.sub("", buf.getvalue(), count=1))


def bars(labels: Sequence[str], values: Sequence[float], title: str, *, log: bool = False,
         xlabel: str = "", color: str = PALETTE[0]) -> str:
    """Horizontal bars, one per label, top to bottom in the given order."""
    fig, ax = plt.subplots(figsize=(7.0, 0.32 * max(len(labels), 3) + 0.8))
    y = list(range(len(labels)))[::-1]
    ax.barh(y, values, color=color)
    ax.set_yticks(y, [str(x) for x in labels])
    if log and any(v > 0 for v in values):
        ax.set_xscale("log")
    for yi, v in zip(y, values):
        ax.annotate(f"{v:,.0f}", (v, yi), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_title(title, loc="left")
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", visible=False)
    return to_svg(fig)


def funnel(steps: Sequence[str], events: Sequence[int], users: Sequence[int]) -> str:
    """Events and distinct users per funnel step, side by side, log scale."""
    fig, ax = plt.subplots(figsize=(7.0, 3.0))
    x = range(len(steps))
    w = 0.4
    ax.bar([i - w / 2 for i in x], events, w, label="events", color=PALETTE[0])
    ax.bar([i + w / 2 for i in x], users, w, label="distinct users", color=PALETTE[1])
    ax.set_xticks(list(x), list(steps))
    if any(v > 0 for v in [*events, *users]):
        ax.set_yscale("log")
    ax.set_title("Event funnel", loc="left")
    ax.legend(frameon=False)
    return to_svg(fig)


def long_tail(counts: Sequence[int]) -> str:
    """Interactions per item, most popular first, log scale; the top 10% and 20% marked."""
    fig, ax = plt.subplots(figsize=(7.0, 3.0))
    ranks = range(1, len(counts) + 1)
    ax.fill_between(ranks, counts, step="mid", alpha=0.35, color=PALETTE[0])
    ax.plot(ranks, counts, color=PALETTE[0], lw=1.2, drawstyle="steps-mid")
    if any(c > 0 for c in counts):
        ax.set_yscale("log")
    for share, colour in ((0.1, PALETTE[3]), (0.2, PALETTE[1])):
        cut = max(1, round(len(counts) * share))
        ax.axvline(cut, color=colour, ls="--", lw=1, label=f"top {share:.0%} of items")
    ax.set_xlabel("item rank by interactions")
    ax.set_ylabel("interactions")
    ax.set_title("Popularity long tail", loc="left")
    ax.legend(frameon=False)
    return to_svg(fig)


def training(epochs: Sequence[int], series: dict[str, Sequence[float | None]]) -> str:
    """The training loss (left axis) and validation metrics (right axis) per epoch."""
    fig, ax = plt.subplots(figsize=(7.0, 3.0))
    lines = []
    loss = series.get("train_loss")
    if loss:
        lines += ax.plot(epochs[:len(loss)], loss, marker="o", color=PALETTE[0], label="train_loss")
        ax.set_ylabel("training loss")
    right = ax.twinx()
    right.grid(False)
    for i, (name, values) in enumerate((k, v) for k, v in series.items() if k != "train_loss" and v):
        lines += right.plot(epochs[:len(values)], values, marker="s", color=PALETTE[1 + i], label=name)
    right.set_ylabel("validation")
    ax.set_xlabel("epoch")
    ax.set_xticks(list(epochs))
    ax.set_title("Training", loc="left")
    ax.legend(lines, [ln.get_label() for ln in lines], frameon=False, loc="center right")
    return to_svg(fig)


def grouped_bars(groups: Sequence[str], series: dict[str, Sequence[float]], title: str) -> str:
    """One group of bars per metric, one bar per scorer (``series``: scorer -> values)."""
    fig, ax = plt.subplots(figsize=(7.0, 3.2))
    n = max(len(series), 1)
    w = 0.8 / n
    for i, (name, values) in enumerate(series.items()):
        ax.bar([g + (i - (n - 1) / 2) * w for g in range(len(groups))], values, w, label=name,
               color=PALETTE[i % len(PALETTE)])
    ax.set_xticks(list(range(len(groups))), list(groups))
    ax.set_title(title, loc="left")
    ax.legend(frameon=False, ncols=min(n, 4), fontsize=8)
    return to_svg(fig)
