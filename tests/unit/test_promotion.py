"""Gated promotion on a real MLflow registry (SQLite): first model, promote, keep, force.

The versions are real registered versions of real runs; the evaluation figures are recorded
on them through the same function `recsys evaluate` uses (the evaluate → promote chain on a
trained model is covered end to end in tests/e2e)."""

from __future__ import annotations

import json

import pytest

from recsys.errors import NoModelError, UsageError
from recsys.promotion import compare, decide, promote, record_evaluation, render_comparison

from ..conftest import make_config


def test_the_rule():
    assert decide(0.05, None, 0.20, 0.001).promote  # the first model, even a poor one
    assert decide(0.30, 0.25, 0.10, 0.001).promote  # better
    assert decide(0.2495, 0.25, 0.10, 0.001).promote  # within the tolerance
    assert not decide(0.2485, 0.25, 0.10, 0.001).promote  # below it
    assert not decide(0.30, 0.25, 0.30, 0.001).promote  # ties with most-popular
    assert "most-popular" in decide(0.30, 0.25, 0.35, 0.001).reason
    assert decide(0.01, 0.25, 0.35, 0.001, force=True).promote


@pytest.fixture
def registry(tmp_path):
    """A config on a fresh lakehouse and a function that trains a "model": a real run and a
    registered version with the challenger alias, as training leaves it."""
    import mlflow

    from recsys.tracking import setup_from_config

    cfg = make_config(tmp_path / "lakehouse")
    experiment = setup_from_config(cfg)
    client = mlflow.MlflowClient()
    name = cfg.tracking.model_name

    def trained(val_ndcg: float) -> str:
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_metrics({"best_val_ndcg_at_10": val_ndcg, "epochs_run": 3})
            mlflow.log_dict({"weights": "none"}, "model/spec.json")
        if not client.search_registered_models(f"name = '{name}'"):
            client.create_registered_model(name)
        mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
        client.set_registered_model_alias(name, cfg.tracking.challenger_alias, mv.version)
        return str(mv.version)

    def evaluated(version: str, model: float, popularity: float, champion: float | None = None,
                  against: str | None = None) -> None:
        figures = {"model": model, "popularity": popularity, **({"champion": champion} if champion is not None else {})}
        run_id = client.get_model_version(name, version).run_id
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics({f"test_{k}_ndcg_at_10": v for k, v in figures.items()})
        record_evaluation(cfg, version, figures, against)

    def tags(version: str) -> dict:
        return client.get_model_version(name, version).tags

    def champion() -> str:
        return str(client.get_model_version_by_alias(name, cfg.tracking.alias).version)

    return cfg, trained, evaluated, tags, champion


def test_first_model_then_keep_then_promote_then_force(registry):
    cfg, trained, evaluated, tags, champion = registry
    with pytest.raises(NoModelError, match="recsys train"):
        promote(None, cfg)

    v1 = trained(0.20)
    with pytest.raises(UsageError, match="recsys evaluate"):
        promote(None, cfg)  # not evaluated yet
    evaluated(v1, model=0.10, popularity=0.12)  # worse than most-popular, but there is no champion
    r = promote(None, cfg)
    assert (r["promoted"], r["decision"], r["champion_after"]) == (True, "promoted", v1) and champion() == v1
    assert tags(v1)["promotion.decision"] == "promoted" and "first model" in tags(v1)["promotion.reason"]
    assert promote(None, cfg)["decision"] == "unchanged"  # the challenger is already the champion

    v2 = trained(0.18)
    evaluated(v2, model=0.08, popularity=0.05, champion=0.10, against=v1)
    r = promote(None, cfg)
    assert (r["promoted"], r["decision"], champion()) == (False, "kept", v1)
    assert r["scores"] == {"challenger": 0.08, "champion": 0.10, "popularity": 0.05}
    t = tags(v2)
    assert t["promotion.decision"] == "kept" and float(t["promotion.champion_ndcg_at_10"]) == 0.10
    assert t["promotion.champion_version"] == v1 and "below the champion" in t["promotion.reason"]
    report = json.loads(sorted(cfg.lakehouse.reports_path.glob("promote-*.json"))[-1].read_text())
    assert report["decision"] == "kept" and report["champion_after"] == v1

    v3 = trained(0.25)
    evaluated(v3, model=0.0995, popularity=0.05, champion=0.10, against=v1)  # within the 0.001 tolerance
    assert promote(None, cfg)["promoted"] and champion() == v3

    v4 = trained(0.10)
    evaluated(v4, model=0.20, popularity=0.05, champion=0.19, against=v1)  # measured against an old champion
    with pytest.raises(UsageError, match=f"against champion version {v3}"):
        promote(None, cfg)
    evaluated(v4, model=0.01, popularity=0.05, champion=0.19, against=v3)
    assert not promote(None, cfg)["promoted"]
    r = promote(None, cfg, force=True)  # the explicit override
    assert r["promoted"] and r["forced"] and champion() == v4 and tags(v4)["promotion.forced"] == "True"


def test_compare_shows_both_versions_side_by_side(registry):
    cfg, trained, evaluated, tags, champion = registry
    v1 = trained(0.20)
    evaluated(v1, model=0.10, popularity=0.05)
    promote(None, cfg)
    v2 = trained(0.30)
    evaluated(v2, model=0.1234, popularity=0.05, champion=0.1111, against=v1)
    report = compare(None, cfg)
    assert report["same_pass"] is True
    assert report["versions"]["challenger"]["version"] == v2 and report["versions"]["champion"]["version"] == v1
    assert report["versions"]["champion"]["test"]["ndcg_at_10"] == pytest.approx(0.1111)  # from the same pass
    text = render_comparison(report)
    lines = text.splitlines()
    assert f"challenger (v{v2})" in lines[1] and f"champion (v{v1})" in lines[1]
    row = next(line for line in lines if line.startswith("test NDCG@10"))
    assert "0.1234" in row and "0.1111" in row
    assert "one evaluation pass" in text
