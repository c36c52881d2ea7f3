"""The stage registry and the command built from it: every stage has a function, a job, a
real --help and a dry run; user mistakes are one line, bugs keep their traceback."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest
import yaml

from recsys import cli, stages
from recsys.config import Config, ConfigError, TablesConfig, _flatten, load_config, to_dict
from recsys.errors import RecsysError, UsageError

ROOT = Path(__file__).resolve().parents[2]
TABLES = {f.name for f in dataclasses.fields(TablesConfig)}


@pytest.mark.parametrize("stage", stages.STAGES, ids=lambda s: s.name)
def test_every_stage_resolves_and_names_real_tables(stage):
    fn = stage.function()
    assert callable(fn)
    params = list(typing.get_type_hints(fn))  # annotated: spark, cfg first
    assert params[:2] == ["spark", "cfg"], stage.target
    for o in stage.options:
        assert o.dest in params, (stage.name, o.dest)
    for name in stage.reads + stage.writes:
        assert name in TABLES or name == "landing", (stage.name, name)


def test_every_stage_has_its_job_and_every_job_a_stage():
    jobs = {p.name for p in (ROOT / "jobs").glob("*.py")}
    expected = {Path(s.job).name for s in stages.STAGES} | {"demo.py"}
    assert jobs == expected
    for s in stages.STAGES:
        text = (ROOT / s.job).read_text()
        assert f'run(stage="{s.name}")' in text and "def main()" in text


def test_the_pipeline_follows_the_config():
    names = lambda cfg: [s.name for s in stages.pipeline(cfg)]  # noqa: E731
    cfg = load_config(None)
    assert names(cfg) == ["generate", "ingest", "build-profiles", "embed-text", "train", "evaluate", "promote",
                          "recommend", "build-search", "train-search-ranker", "search-results", "audiences", "report"]
    assert "embed-text" not in names(load_config(None, ["features.text_embeddings=false"]))
    with pytest.raises(UsageError, match="unknown stage 'trian'; stages: generate"):
        stages.get("trian")


@pytest.mark.parametrize("stage", stages.STAGES, ids=lambda s: s.name)
def test_per_stage_help(stage, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([stage.name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert stage.help in out and f"reads: {', '.join(stage.reads) or '-'}" in out and "--dry-run" in out
    for o in stage.options:
        assert o.flag in out


def test_dry_run_prints_the_config_and_the_tables_on_any_storage(capsys):
    assert cli.main(["build-profiles", "--dry-run", "lakehouse.root=s3a://shop/lake", "train.epochs=3"]) == 0
    out = json.loads(capsys.readouterr().out)
    where = out["stages"]["build-profiles"]
    assert where["reads"]["events"] == "s3a://shop/lake/bronze/events"
    assert where["writes"]["training_examples"] == "s3a://shop/lake/gold/training_examples"
    assert out["config"]["train.epochs"] == 3 and out["config"]["lakehouse.root"] == "s3a://shop/lake"
    assert cli.main(["demo", "--dry-run"]) == 0
    assert list(json.loads(capsys.readouterr().out)["stages"]) == [s.name for s in stages.pipeline(load_config(None))]
    # with catalog tables, each table's name and where it lives
    assert cli.main(["ingest", "--dry-run", "lakehouse.root=s3a://shop/lake", "lakehouse.catalog=main",
                     "lakehouse.schema=recsys"]) == 0
    writes = json.loads(capsys.readouterr().out)["stages"]["ingest"]["writes"]
    assert writes["events"] == "main.recsys.events at s3a://shop/lake/bronze/events"


def _buggy(spark, cfg):  # a stage with a bug in it
    return {}["missing"]


def _mistaken(spark, cfg):  # a stage that meets a user mistake
    raise ConfigError("config key 'x.y': not like that")


@pytest.fixture
def test_stages(monkeypatch):
    extra = {n: stages.Stage(n, f"tests.unit.test_stages:_{n}", "a test stage", needs_spark=False, pipeline=False)
             for n in ("buggy", "mistaken")}
    monkeypatch.setattr(stages, "BY_NAME", {**stages.BY_NAME, **extra})


def test_a_user_mistake_is_one_line_and_a_bug_keeps_its_traceback(test_stages, capsys, monkeypatch):
    monkeypatch.delenv("RECSYS_DEBUG", raising=False)
    assert cli.main([], stage="mistaken") == 2
    assert capsys.readouterr().err.strip() == "recsys mistaken: error: config key 'x.y': not like that"
    with pytest.raises(KeyError):  # a KeyError is a bug, not a user mistake: never swallowed
        cli.main([], stage="buggy")
    monkeypatch.setenv("RECSYS_DEBUG", "1")
    with pytest.raises(RecsysError):
        cli.main([], stage="mistaken")


def test_import_csv_takes_its_mapping_on_the_command_line(tmp_path, capsys):
    src = tmp_path / "export.csv"
    src.write_text("uid,sku,time,action\nalice,A1,2026-10-01T10:00:00Z,view\nbob,B2,2026-10-01T11:00:00Z,purchase\n")
    root = f"lakehouse.root={tmp_path / 'lh'}"
    assert cli.main(["import", "--source", str(src), "--format", "csv", root]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recsys import: error: import --format csv needs --map") and "user_id, item_id, ts" in err
    assert cli.main(["import", "--source", str(src), "--format", "csv", "--map", "user_id=uid,sku=item_id", root]) == 2
    assert "unknown key(s) ['sku']" in capsys.readouterr().err
    assert cli.main(["import", "--source", str(src), "--format", "csv", root,
                     "--map", "user_id=uid,item_id=sku,ts=time,event_type=action"]) == 0
    assert json.loads(capsys.readouterr().out)["events"] == 2
    events = [json.loads(line) for f in sorted((tmp_path / "lh" / "landing" / "events").glob("*.jsonl"))
              for line in f.read_text().splitlines()]
    assert [(e["user_id"], e["item_id"], e["event_type"]) for e in events] == [("alice", "A1", "view"),
                                                                              ("bob", "B2", "purchase")]


def test_generate_never_writes_future_events(tmp_path):
    """A long history ends before today whoever generates it (the CLI, the demo, the notebook
    all run this one stage function)."""
    import datetime as dt

    cfg = load_config(None, [f"lakehouse.root={tmp_path}", "generator.days=90", "generator.users=40",
                             "generator.items=20", "generator.malformed_rate=0.0"])
    stages.run_stage("generate", cfg)
    latest = max(
        dt.datetime.fromtimestamp(int(e["ts"]) / 1000, dt.timezone.utc) if str(e["ts"]).isdigit()
        else dt.datetime.fromisoformat(str(e["ts"]).replace("Z", "+00:00"))
        for f in (tmp_path / "landing" / "events").glob("*.jsonl")
        for e in map(json.loads, f.read_text().splitlines())
    )
    assert latest < dt.datetime.now(dt.timezone.utc)


def test_each_default_is_the_same_in_the_dataclasses_and_base_yaml():
    base = _flatten(yaml.safe_load((ROOT / "conf" / "base.yaml").read_text()))
    assert base == _flatten(to_dict(Config()))
