"""The HTML report's template and charts without Spark: a hand-made run renders into one page
with every section, nothing left unrendered, and no reference to anything outside the page."""

from __future__ import annotations

import re

from recsys.htmlreport import charts
from recsys.htmlreport.build import SECTIONS, render

# What would load something from outside the page: src/href to a URL, CSS url(), @import.
EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import""", re.I)


def run_data(**override):
    missing = {"state": "not built yet", "missing": ["audiences"]}
    data = {
        "header": {"lakehouse": "/tmp/lh", "run_date": "2026-11-01", "model_name": "recsys-sasrec", "model_version": "3",
                   "mlflow_run_id": "abc123", "tracking_uri": "sqlite:///x.db", "generated_at": "2026-11-01 10:00:00 UTC"},
        "tables": {"state": "ok", "rows": [{"name": "events", "location": "/tmp/lh/bronze/events", "rows": 74000},
                                           {"name": "catalog", "location": "/tmp/lh/bronze/catalog", "rows": 600}],
                   "chart": charts.bars(["events", "catalog"], [74000, 600], "Rows", log=True),
                   "quarantine": [{"source": "events", "rule": "bad_<ts>", "count": 12}],
                   "quarantine_chart": charts.bars(["events: bad_ts"], [12], "Quarantine")},
        "funnel": {"state": "ok", "steps": [{"type": "view", "events": 100, "users": 50, "users_of_previous": None},
                                            {"type": "click", "events": 40, "users": 30, "users_of_previous": 0.6}],
                   "searches": {"events": 9, "users": 4},
                   "chart": charts.funnel(["view", "click"], [100, 40], [50, 30])},
        "long-tail": {"state": "ok", "n_items": 5, "interactions": 31, "catalogue": 10, "median": 5, "max": 12,
                      "shares": [{"top": "20%", "items": 1, "share": 12 / 31}], "chart": charts.long_tail([12, 8, 5, 4, 2])},
        "training": {"state": "ok", "run_id": "abc123", "run_name": "train", "metrics": ("train_loss", "val_ndcg_at_10"),
                     "rows": [{"epoch": 0, "train_loss": 5.1, "val_ndcg_at_10": 0.1},
                              {"epoch": 1, "train_loss": 4.2, "val_ndcg_at_10": None}],
                     "best_epoch": 0.0, "best": 0.1, "stopped_by": "epochs",
                     "chart": charts.training([0, 1], {"train_loss": [5.1, 4.2], "val_ndcg_at_10": [0.1, None]})},
        "evaluation": {"state": "ok", "source": "evaluate-x.json",
                       "columns": [{"key": "hr_at_10", "label": "HR@10"}, {"key": "ndcg_at_10", "label": "NDCG@10"}],
                       "rows": [{"scorer": "model", "values": [0.3, 0.2]}, {"scorer": "popularity", "values": [0.1, None]}],
                       "chart": charts.grouped_bars(["HR@10", "NDCG@10"], {"model": [0.3, 0.2], "popularity": [0.1, 0.0]}, "x")},
        "gallery": {"state": "ok", "run_date": "2026-11-01", "history_steps": 8, "users": [
            {"user_id": "u1" * 10, "kind": "long history", "steps": 2,
             "history": [{"title": "Red <b>shoe</b>", "category": "shoes", "brand": "b", "price": 9.5,
                          "event_type": "purchase", "ts": "2026-10-30 12:00"}],
             "recommendations": [{"title": "Blue shoe", "category": "shoes", "brand": "b", "price": 10.0, "rank": 1,
                                  "score": 0.93, "reason": "because you bought Red shoe", "source": "model"}]},
            {"user_id": "u2", "kind": "short or new", "steps": 0, "history": [], "recommendations": []}]},
        "audiences": missing,
        "search": {"state": "ok", "stats": {"searches": 9, "users": 4, "queries": 3, "engaged": 0.5},
                   "top_queries": [{"query_norm": "red shoe", "searches": 5, "users": 2}], "results_state": "ok",
                   "results": [{"search_id": "s1", "query": "red shoe", "rows": [
                       {"rank": 1, "title": "Red shoe", "category": "shoes", "score": 1.5, "reason": "matches"}]}]},
    }
    data.update(override)
    return data


def test_every_section_renders_self_contained():
    html = render(run_data())
    for s in SECTIONS:
        assert f'<section id="{s}">' in html
    assert html.count("<svg") == 6  # tables, quarantine, funnel, long tail, training, evaluation
    assert "{{" not in html and "{%" not in html and "}}" not in html
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    assert "<link" not in html and "<img src=\"http" not in html
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html  # the charts are bare <svg> elements
    assert "Red &lt;b&gt;shoe&lt;/b&gt;" in html and "bad_&lt;ts&gt;" in html  # data is escaped
    assert "because you bought Red shoe" in html and 'data-card="1"' in html
    assert "document.body.dataset.ready" in html and "window.onerror" in html
    assert "2026-11-01" in html and "recsys-sasrec v3" in html


def test_missing_tables_say_not_built_yet():
    missing = {"state": "not built yet", "missing": ["events"]}
    html = render(run_data(**{s: missing for s in SECTIONS}))
    for s in SECTIONS:
        body = html.split(f'<section id="{s}">', 1)[1].split("</section>", 1)[0]
        assert "Not built yet" in body, s
    assert 'id="gallery-select"' not in html  # the script copes with no gallery
    assert "<svg" not in html


def test_charts_are_bare_svg_elements():
    svg = charts.long_tail([0, 0, 0])  # nothing to put on a log scale: still a chart
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>") and "<metadata>" not in svg
    assert charts.bars([], [], "empty").startswith("<svg")
