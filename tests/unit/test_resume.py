"""Which MLflow run `train --resume` / `train.resume=true` continues, on a real MLflow store."""

from __future__ import annotations

import time

import pytest

from recsys.config import replace
from recsys.errors import UsageError
from recsys.training import checkpoints
from recsys.training.launch import CHECKPOINT_TAG, resume_target, start_again_if_no_epoch

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


def test_a_start_that_fails_before_an_epoch_ends_is_started_again_once(tmp_path):
    """What wraps TorchDistributor's run: a failure that leaves the checkpoint where it was
    (a rendezvous port taken at start) gets one more start; a failure after an epoch ended,
    or a second failure, is raised."""
    folder = str(tmp_path / "ckpt")
    calls: list[int] = []

    def fails_at_start(times: int, epochs_before_failing: int = 0):
        def start() -> dict:
            calls.append(1)
            for _ in range(epochs_before_failing):
                done = (checkpoints.summary(folder) or {}).get("epoch", 0) + 1
                checkpoints.save(folder, {"epoch": done}, {"epoch": done})
            if len(calls) <= times:
                raise RuntimeError("TorchDistributor failed during training.")
            return {"epochs": 3}
        return start

    assert start_again_if_no_epoch(fails_at_start(1), folder) == {"epochs": 3} and len(calls) == 2
    calls.clear()
    with pytest.raises(RuntimeError, match="failed during training"):
        start_again_if_no_epoch(fails_at_start(2), folder)
    assert len(calls) == 2  # once again, not more
    calls.clear()
    with pytest.raises(RuntimeError, match="failed during training"):
        start_again_if_no_epoch(fails_at_start(1, epochs_before_failing=1), folder)
    assert len(calls) == 1 and checkpoints.summary(folder)["epoch"] == 1  # it had trained: not started again
    calls.clear()
    # a resumed run fails at start: its checkpoint stays at epoch 1, so it is started again
    assert start_again_if_no_epoch(fails_at_start(1), folder) == {"epochs": 3} and len(calls) == 2
