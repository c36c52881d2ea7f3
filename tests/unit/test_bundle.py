"""The Databricks Asset Bundle (databricks.yml, resources/*.yml): every task runs the wheel's
entry point with a registered pipeline stage, in the registry's order, on a cluster the job
defines, and its parameters resolve to a valid config for that stage (``recsys <stage>
--dry-run``, for every target). The bundle cannot be deployed from here: there is no
Databricks workspace; ``databricks bundle validate`` would check the same structure there."""

from __future__ import annotations

import json
import re
import tomllib

import pytest
import yaml

from recsys.cli import main
from recsys.config import load_config
from recsys.stages import pipeline

from ..conftest import ROOT

REF = re.compile(r"\$\{([a-z_.]+)\}")


def bundle(target: str) -> tuple[dict, dict]:
    """(the bundle's root document, its single job) with every ``${…}`` reference resolved
    for ``target`` the way the Databricks CLI does (variables, target overrides, bundle.target;
    ``/Workspace${workspace.file_path}`` is where the bundle syncs this repository: its root)."""
    root = yaml.safe_load((ROOT / "databricks.yml").read_text())
    resources: dict = {}
    for pattern in root["include"]:
        for path in sorted(ROOT.glob(pattern)):
            for kind, items in yaml.safe_load(path.read_text())["resources"].items():
                resources.setdefault(kind, {}).update(items)
    variables = {k: v["default"] for k, v in root["variables"].items()}
    variables.update((root["targets"][target] or {}).get("variables", {}))
    values = {f"var.{k}": str(v) for k, v in variables.items()}
    values.update({"bundle.target": target, "bundle.name": root["bundle"]["name"], "workspace.file_path": ""})

    def resolve(text: str) -> str:
        for _ in range(10):
            text = text.replace("/Workspace${workspace.file_path}", str(ROOT))
            new = REF.sub(lambda m: values[m.group(1)], text)
            if new == text:
                return text
            text = new
        raise AssertionError(f"unresolved reference in {text!r}")

    jobs = json.loads(resolve(json.dumps(resources["jobs"])))
    assert len(jobs) == 1
    return root, next(iter(jobs.values()))


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_the_job_runs_the_pipeline_stages_in_order_from_the_wheel(target):
    root, job = bundle(target)
    assert set(root["targets"]) == {"dev", "prod"} and root["targets"]["dev"]["default"] is True
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
    tasks = job["tasks"]
    stages = [t["python_wheel_task"]["parameters"][0] for t in tasks]
    assert stages == [s.name for s in pipeline(load_config(None)) if s.name != "generate"]
    for before, task in zip([None, *tasks], tasks):
        wheel = task["python_wheel_task"]
        assert wheel["package_name"] == project["name"] and wheel["entry_point"] in project["scripts"]
        assert task["task_key"] == wheel["parameters"][0]
        assert task["job_cluster_key"] in clusters and task["libraries"] == [{"whl": "../dist/*.whl"}]
        assert task.get("depends_on", []) == ([{"task_key": before["task_key"]}] if before else [])
    train = next(t for t in tasks if t["task_key"] == "train")
    assert "gpu" in clusters[train["job_cluster_key"]]["spark_version"]
    assert "train.use_gpu=true" in train["python_wheel_task"]["parameters"]
    assert root["artifacts"]["recsys_wheel"]["type"] == "whl"


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_every_task_resolves_to_a_valid_config(target, capsys):
    _, job = bundle(target)
    schema = "recsys_prod" if target == "prod" else "recsys"
    for task in job["tasks"]:
        stage, *rest = task["python_wheel_task"]["parameters"]
        assert main([stage, "--dry-run", *rest]) == 0, (task["task_key"], capsys.readouterr().err)
        resolved = json.loads(capsys.readouterr().out)
        config = resolved["config"]
        assert list(resolved["stages"]) == [stage]
        assert config["lakehouse.root"] == f"/Volumes/main/{schema}/lakehouse"
        assert config["tracking.tracking_uri"] == "databricks" and config["env"] == "databricks"
        if "tracking.model_name" in " ".join(rest):
            assert config["tracking.model_name"] == f"main.{schema}.recsys_sasrec"  # a Unity Catalog name


def test_a_wrong_key_in_a_task_would_be_caught(capsys):
    _, job = bundle("dev")
    stage, *rest = job["tasks"][0]["python_wheel_task"]["parameters"]
    assert main([stage, "--dry-run", *rest, "lakehouse.rot=/x"]) == 2
    assert "unknown config key 'lakehouse.rot'" in capsys.readouterr().err
