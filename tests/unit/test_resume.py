"""Which MLflow run `train --resume` / `train.resume=true` continues, on a real MLflow store."""

from __future__ import annotations

import time

import pytest

from recsys.config import replace
from recsys.errors import UsageError
from recsys.training import checkpoints
from recsys.training.launch import CHECKPOINT_TAG, resume_target

from ..conftest import make_config


def test_the_run_to_resume(tmp_path):
    import mlflow

    from recsys.tracking import setup_from_config

    cfg = make_config(tmp_path / "lakehouse")
    experiment = setup_from_config(cfg)
    client = mlflow.MlflowClient()

    def run(status: str, epoch: int | None) -> str:
        time.sleep(0.01)  # distinct start times (milliseconds)
        r = client.create_run(experiment)
        folder = str(tmp_path / "ckpt" / r.info.run_id)
        client.set_tag(r.info.run_id, CHECKPOINT_TAG, folder)
        if epoch is not None:
            checkpoints.save(folder, {"epoch": epoch}, {"epoch": epoch})
        if status != "RUNNING":
            client.set_terminated(r.info.run_id, status)
        return r.info.run_id

    assert resume_target(cfg, experiment, None) is None  # not asked to resume
    with pytest.raises(UsageError, match="no interrupted run with a checkpoint"):
        resume_target(replace(cfg, "train.resume=true"), experiment, None)

    finished = run("FINISHED", 3)
    failed = run("FAILED", 2)
    killed = run("RUNNING", 5)  # the driver died: nobody marked it
    no_checkpoint = run("FAILED", None)  # failed before its first epoch ended
    assert resume_target(replace(cfg, "train.resume=true"), experiment, None) == killed  # the newest with a checkpoint
    assert resume_target(cfg, experiment, failed) == failed
    assert resume_target(replace(cfg, f"train.resume_run_id={failed}"), experiment, None) == failed
    with pytest.raises(UsageError, match="it finished"):
        resume_target(cfg, experiment, finished)
    with pytest.raises(UsageError, match="left no checkpoint"):
        resume_target(cfg, experiment, no_checkpoint)
    with pytest.raises(UsageError, match="no such run"):
        resume_target(cfg, experiment, "0123456789abcdef")
