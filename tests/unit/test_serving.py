"""The recommender as an MLflow pyfunc model: logged with a signature, an input example and
pinned requirements, loaded back with mlflow.pyfunc, and ranking like the shared code.

(The trained model through spark_udf and `mlflow models serve`, against batch scoring, is in
tests/e2e/test_serving.py.)"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from recsys.config import ModelConfig
from recsys.events import EVENT_TYPE_INDEX
from recsys.models import build_model
from recsys.models.loading import pad_left
from recsys.models.serving import exclusion_mask, log_recommender, rank_catalogue

from .test_model_factory import catalogue


def test_exclusion_mask_is_one_scatter_over_ragged_lists():
    m = exclusion_mask([[1, 3], None, [], [2, 2, 99]], 5)
    assert m.tolist() == [[False, True, False, True, False], [False] * 5, [False] * 5,
                          [False, False, True, False, False]]  # 99 is beyond the catalogue: ignored


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    import mlflow

    from recsys.tracking import setup_mlflow

    tmp = tmp_path_factory.mktemp("serving")
    experiment = setup_mlflow(f"sqlite:///{tmp}/mlflow.db", str(tmp / "artifacts"), "serving")
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=16, blocks=1, heads=1, dropout=0.1), catalogue(20), 6).eval()
    items = [None, *[f"sku-{i}" for i in range(1, 21)]]
    with mlflow.start_run(experiment_id=experiment):
        info = log_recommender(model, items, "serving-test", tmp / "work")
    return model, items, info


def test_the_logged_model_has_a_signature_an_example_and_pinned_requirements(logged):
    import mlflow
    from importlib.metadata import version

    _, _, info = logged
    assert [c["name"] for c in info.signature.inputs.to_dict()] == ["item_ids", "event_types"]
    assert [c["name"] for c in info.signature.outputs.to_dict()] == ["item_ids", "scores", "reason_item_ids",
                                                                     "sources"]
    assert {p.name for p in info.signature.params} == {"top_k", "exclude"}
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    reqs = (local / "requirements.txt").read_text().split()
    assert f"torch=={version('torch')}" in reqs and f"mlflow=={version('mlflow')}" in reqs
    assert (local / "code" / "recsys" / "models" / "serving.py").is_file()  # the project code it needs
    assert (local / "serving_input_example.json").is_file()


def test_pyfunc_predict_ranks_like_the_shared_code_with_exclusions(logged):
    import mlflow

    model, items, info = logged
    served = mlflow.pyfunc.load_model(f"models:/serving-test/{info.registered_model_version}")
    histories = [["sku-3", "sku-7", "sku-9"], ["sku-1"], ["unknown-item", "sku-4"]]
    types = [["view", "purchase", "click"], ["add_to_cart"], ["view", "view"]]
    out = served.predict(pd.DataFrame({"item_ids": histories, "event_types": types}), params={"top_k": 5})
    assert list(out.columns) == ["item_ids", "scores", "reason_item_ids", "sources"] and len(out) == 3
    # Logged without rules: the model's own ranking, every row from the model.
    assert out["sources"].tolist() == [["model"] * 5, ["model_short_history"] * 5, ["model_short_history"] * 5]

    idx = [[items.index(i) for i in h if i in items] for h in histories]
    kinds = [[EVENT_TYPE_INDEX[t] for i, t in zip(h, ts) if i in items] for h, ts in zip(histories, types)]
    bought = [[items.index("sku-7")], [], []]  # "purchased" is the default exclusion
    with torch.no_grad():
        top, scores, reasons = rank_catalogue(model, model.item_vectors(), torch.from_numpy(pad_left(idx, 6)),
                                              torch.from_numpy(pad_left(kinds, 6)), exclusion_mask(bought, 21), 5)
    for row in range(3):
        assert out["item_ids"][row] == [items[i] for i in top[row].tolist()]
        assert out["reason_item_ids"][row] == [items[i] for i in reasons[row].tolist()]
        assert out["scores"][row] == pytest.approx(scores[row].tolist(), rel=1e-5)
    assert "sku-7" not in out["item_ids"][0]  # bought: never recommended back
    assert all(r in histories[0] for r in out["reason_item_ids"][0])  # reasons come from the history

    every = served.predict(pd.DataFrame({"item_ids": [histories[0]], "event_types": [types[0]]}),
                           params={"top_k": 20, "exclude": "interacted"})
    assert not set(histories[0]) & set(every["item_ids"][0]) and len(every["item_ids"][0]) == 17
    plain = served.predict(pd.DataFrame({"item_ids": [histories[0]]}), params={"top_k": 3, "exclude": "none"})
    assert len(plain["item_ids"][0]) == 3  # event types are optional (views)
    with pytest.raises(Exception, match="exclude must be one of purchased, interacted, none"):
        served.predict(pd.DataFrame({"item_ids": [histories[0]]}), params={"exclude": "all"})


def test_a_model_logged_with_rules_serves_them(logged, tmp_path):
    """The catalogue's rules travel with the model: items 2-5 out of stock are never served,
    and a history the model does not know gets the shop's most popular allowed items."""
    import mlflow
    import numpy as np

    from recsys.scoring.ranking import ItemRules

    model, items, _ = logged
    allowed = np.r_[False, np.ones(20, bool)]
    allowed[2:6] = False
    rules = ItemRules(category=np.r_[0, np.arange(20) % 3 + 1], brand=np.zeros(21, np.int64), allowed=allowed,
                      popularity=-np.arange(21.0))
    with mlflow.start_run(experiment_id=mlflow.get_experiment_by_name("serving").experiment_id):
        info = log_recommender(model, items, "serving-rules-test", tmp_path / "work", rules=rules)
    served = mlflow.pyfunc.load_model(info.model_uri)
    out = served.predict(pd.DataFrame({"item_ids": [["sku-1"], ["unknown-item"]]}),
                         params={"top_k": 20, "exclude": "interacted"})
    assert sorted(out["item_ids"][0]) == sorted(f"sku-{i}" for i in range(6, 21))  # 1 seen, 2-5 out of stock
    assert out["sources"][0] == ["model_short_history"] * 15
    assert out["item_ids"][1] == [f"sku-{i}" for i in [1, *range(6, 21)]]  # most popular first
    assert out["sources"][1] == ["popular"] * 16 and np.isnan(out["scores"][1]).all()
    assert out["reason_item_ids"][1] == [None] * 16
