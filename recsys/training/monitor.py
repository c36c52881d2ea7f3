"""Training progress on the driver while the distributed job runs.

The training processes may run on other machines (their output goes to executor logs), but
rank 0 logs each epoch's figures to the MLflow run. :class:`EpochMonitor` follows that run from
the driver and prints one line per epoch (loss, validation NDCG@10 / HR@10, examples/s,
learning rate, elapsed, ETA), with a tqdm progress bar over the epochs when stderr is a
terminal.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

log = logging.getLogger("recsys.training")

EPOCH_METRICS = ("train_loss", "val_ndcg_at_10", "val_hr_at_10", "examples_per_second", "lr", "seconds")


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def epoch_line(epoch: int, epochs: int, m: dict[str, float], max_seconds: float) -> str:
    """One line for an epoch's figures ``m`` (EPOCH_METRICS); the ETA is the end of the epochs
    at the mean pace so far, or the end of the time budget if that comes first."""
    elapsed = m.get("seconds", 0.0)
    eta = elapsed / max(epoch, 1) * (epochs - epoch)
    if max_seconds > 0:
        eta = min(eta, max(0.0, max_seconds - elapsed))
    return (f"epoch {epoch}/{epochs}  loss {m.get('train_loss', float('nan')):.4f}  "
            f"val NDCG@10 {m.get('val_ndcg_at_10', float('nan')):.4f}  HR@10 {m.get('val_hr_at_10', float('nan')):.4f}  "
            f"{m.get('examples_per_second', 0.0):,.0f} ex/s  lr {m.get('lr', 0.0):.2e}  "
            f"elapsed {duration(elapsed)}  ETA {duration(eta)}")


class EpochMonitor:
    """Polls the run's per-epoch metrics every ``interval`` seconds in a daemon thread;
    ``stop()`` prints whatever arrived last and ends it. Use as a context manager."""

    def __init__(self, tracking_uri: str, run_id: str, epochs: int, max_seconds: float, interval: float = 3.0,
                 progress: bool | None = None) -> None:
        self.tracking_uri, self.run_id, self.epochs, self.max_seconds = tracking_uri, run_id, epochs, max_seconds
        self.interval = interval
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.seen = 0  # epochs printed so far
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="recsys-epoch-monitor", daemon=True)
        self._bar: Any = None

    def __enter__(self) -> "EpochMonitor":
        if self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=self.epochs, unit="epoch", desc="training", file=sys.stderr, leave=False)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        try:
            self.poll()  # the epochs logged since the last poll
        except Exception as e:
            log.debug("epoch monitor: %s", e)
        if self._bar is not None:
            self._bar.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception as e:  # never let the monitor break training
                log.debug("epoch monitor: %s", e)

    def poll(self) -> None:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        history = {k: {m.step: m.value for m in client.get_metric_history(self.run_id, k)} for k in EPOCH_METRICS}
        epochs = sorted(history["val_ndcg_at_10"])
        for epoch in (e for e in epochs if e > self.seen):
            line = epoch_line(epoch, self.epochs, {k: v[epoch] for k, v in history.items() if epoch in v},
                              self.max_seconds)
            self.lines.append(line)
            if self._bar is not None:
                self._bar.update(epoch - self.seen)
                self._bar.write(line, file=sys.stderr)
            else:
                log.info("%s", line)
            self.seen = epoch
