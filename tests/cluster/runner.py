"""`make cluster-test`: the pipeline on a real Spark standalone cluster, the way a user runs it.

What it does (docs/cluster.md explains each step and the commands):

1. builds the project as a wheel (``uv build --wheel``) and installs it, not the checkout,
   into a separate Python environment for the cluster's nodes (``<work>/venv``, from
   requirements.lock): the driver and every executor run that interpreter;
2. generates one shop into a landing folder that both runs read;
3. starts a standalone master and two workers (one core each, their own JVMs, on
   127.0.0.1) from the Spark distribution installed with pyspark;
4. checks where ``recsys`` is imported from in the driver and the executors (the wheel in
   the node environment) with a probe job;
5. runs every pipeline stage of the registry (``recsys.stages.pipeline``, after generate)
   through ``spark-submit --master spark://127.0.0.1:<port> jobs/<stage>.py --config
   conf/cluster-test.yaml``, watching the process tree while ``train`` runs: TorchDistributor's
   ``torch.distributed.run`` processes must descend from the two worker JVMs, one each;
6. runs the same stages through ``spark-submit --master local[2]`` into another lakehouse;
7. runs ``build-profiles`` once more on a copy of the cluster's bronze tables and SIGKILLs one
   worker JVM while it runs (once the driver's REST API shows some jobs done); the job must
   complete on the other worker; a replacement worker is started afterwards;
8. compares the tables of the runs (tests/cluster/compare_lakehouses.py) and the training and
   evaluation figures;
9. stops the cluster whatever happened and checks that no process it started is left.

``--scope small`` (CI) runs ingest and build-profiles only (both runs, the killed worker, the
comparison of the bronze and profile tables); ``--scope full`` (default) every stage.

Only the standard library: run it with any Python 3.11 (``make cluster-test`` uses the venv's).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "conf" / "cluster-test.yaml"
MARKER = "RECSYS_CLUSTER_TEST_ID"  # in the environment of every process started here (and their children)
SMALL_STAGES = ("ingest", "build-profiles")
PROFILE_TABLES = ("user_profiles", "item_profiles", "item_daily_counts", "training_examples")
BRONZE_TABLES = ("events", "catalog", "users", "quarantine")
KEY = "cluster-test-pseudonym-key"  # env=cluster refuses the built-in development key


def log(msg: str) -> None:
    print(f"[cluster-test {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 3.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def run(cmd: list[str], **kw) -> None:
    log("$ " + " ".join(map(str, cmd)))
    subprocess.run(cmd, check=True, **kw)


# --- the wheel and the node environment -------------------------------------------------------------

def build_wheel(work: Path, uv: list[str]) -> Path:
    dist = work / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    run([*uv, "build", "--wheel", "--quiet", "--out-dir", str(dist), str(ROOT)])
    (wheel,) = dist.glob("recsys-*.whl")
    return wheel


def node_env(work: Path, uv: list[str], wheel: Path) -> Path:
    """``<work>/venv``: requirements.lock (re-installed when it changes) plus the wheel."""
    venv = work / "venv"
    python = venv / "bin" / "python"
    lock = ROOT / "requirements.lock"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    stamp = venv / ".lock-sha256"
    if not python.exists() or not stamp.exists() or stamp.read_text() != digest:
        shutil.rmtree(venv, ignore_errors=True)
        run([*uv, "venv", "--quiet", "--python", "python3.11", str(venv)])
        run([*uv, "pip", "install", "--quiet", "--python", str(python), "-r", str(lock)])
        # petastorm declares setuptools<70, torch setuptools>=77 (README, "Install")
        run([*uv, "pip", "install", "--quiet", "--python", str(python), "--no-deps", "petastorm==0.13.1"])
        stamp.write_text(digest)
    run([*uv, "pip", "install", "--quiet", "--python", str(python), "--no-deps", "--reinstall-package", "recsys",
         str(wheel)])
    return venv


# --- the cluster ----------------------------------------------------------------------------------

class Cluster:
    """A standalone master and ``workers`` one-core workers, each its own JVM in its own
    process group, on 127.0.0.1; every process carries MARKER in its environment."""

    def __init__(self, spark_home: Path, work: Path, env: dict[str, str], workers: int = 2, worker_memory: str = "3g"):
        self.spark_home, self.work, self.env = spark_home, work, env
        self.n_workers, self.worker_memory = workers, worker_memory
        self.port, self.webui = free_port(), free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        self.killed: set[str] = set()
        self.url = f"spark://127.0.0.1:{self.port}"
        (work / "logs").mkdir(parents=True, exist_ok=True)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        out = open(self.work / "logs" / f"{name}.log", "ab")
        cmd = [str(self.spark_home / "bin" / "spark-class"), *args]
        log(f"start {name}: {' '.join(cmd)}")
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
                             cwd=self.work)
        self.procs[name] = p
        return p

    def start(self) -> None:
        self._spawn("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(self.port), "--webui-port", str(self.webui)])
        for i in range(self.n_workers):
            self.start_worker(i)
        self.wait_workers(self.n_workers)

    def start_worker(self, i: int, name: str | None = None) -> None:
        name = name or f"worker{i}"
        wdir = self.work / name
        wdir.mkdir(parents=True, exist_ok=True)
        self._spawn(name, ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1",
                           "--memory", self.worker_memory, "--port", str(free_port()), "--webui-port", str(free_port()),
                           "--work-dir", str(wdir), self.url])

    def state(self) -> dict:
        return get_json(f"http://127.0.0.1:{self.webui}/json/")

    def alive_workers(self) -> list[dict]:
        return [w for w in self.state().get("workers", []) if w.get("state") == "ALIVE"]

    def wait_workers(self, n: int, timeout: float = 120) -> None:
        end = time.time() + timeout
        while time.time() < end:
            try:
                if len(self.alive_workers()) >= n:
                    log(f"master {self.url} (web UI :{self.webui}) has {n} alive workers")
                    return
            except OSError:
                pass
            for name, p in self.procs.items():
                if name not in self.killed and p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}: see {self.work / 'logs' / (name + '.log')}")
            time.sleep(1)
        raise RuntimeError(f"the master did not see {n} alive workers within {timeout:.0f}s")

    def kill(self, name: str) -> None:
        """SIGKILL the JVM of ``name`` (only that process, as a crash would)."""
        p = self.procs[name]
        log(f"SIGKILL {name} (pid {p.pid})")
        os.kill(p.pid, signal.SIGKILL)
        self.killed.add(name)
        p.wait()

    def pids(self) -> dict[int, str]:
        return {p.pid: name for name, p in self.procs.items() if p.poll() is None}

    def stop(self) -> None:
        for name, p in reversed(list(self.procs.items())):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        end = time.time() + 20
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs.values():
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def ours(marker: str) -> list[tuple[int, str]]:
    """Processes whose environment carries ``MARKER=marker`` (pid, command line)."""
    found = []
    needle = f"{MARKER}={marker}".encode()
    for d in glob.glob("/proc/[0-9]*"):
        pid = int(d.rsplit("/", 1)[1])
        if pid == os.getpid():
            continue
        try:
            if needle in Path(d, "environ").read_bytes().split(b"\0"):
                found.append((pid, Path(d, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]))
        except OSError:
            continue
    return found


def kill_leftovers(marker: str) -> list[tuple[int, str]]:
    """SIGKILL whatever of ours is still running; return what was found."""
    left = ours(marker)
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


# --- watching processes and jobs ------------------------------------------------------------------

def parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class TorchrunWatcher(threading.Thread):
    """Samples the process tree: for every ``torch.distributed.run`` process of this test (its
    environment carries ``marker``), which of ``roots`` (pid → name: the worker JVMs, the
    driver) it descends from, and whether through an executor JVM."""

    def __init__(self, roots: dict[int, str], marker: str):
        super().__init__(daemon=True)
        self.roots = roots
        self.needle = f"{MARKER}={marker}".encode()
        self.seen: dict[int, dict] = {}
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            for d in glob.glob("/proc/[0-9]*"):
                pid = int(d.rsplit("/", 1)[1])
                if pid in self.seen:
                    continue
                cl = cmdline(pid)
                if "torch.distributed.run" not in cl:
                    continue
                try:
                    if self.needle not in Path(d, "environ").read_bytes().split(b"\0"):
                        continue  # someone else's
                except OSError:
                    continue
                chain, p = [], pid
                while p > 1 and p not in self.roots and len(chain) < 30:
                    chain.append(p)
                    p = parent(p)
                kinds = [("executor" if "CoarseGrainedExecutorBackend" in cmdline(c) else
                          "pyspark.daemon" if "pyspark.daemon" in cmdline(c) else "") for c in chain]
                self.seen[pid] = {"root": self.roots.get(p, f"pid {p}"), "cmd": cl[:160],
                                  "through_executor": "executor" in kinds, "chain": chain}
            self.stop_flag.wait(0.5)

    def stop(self) -> dict[int, dict]:
        self.stop_flag.set()
        self.join()
        return self.seen


class WorkerKiller(threading.Thread):
    """Kills ``victim`` once the driver's REST API shows ``after_jobs`` jobs succeeded and one running."""

    def __init__(self, cluster: Cluster, ui_port: int, victim: str, after_jobs: int):
        super().__init__(daemon=True)
        self.cluster, self.ui_port, self.victim, self.after_jobs = cluster, ui_port, victim, after_jobs
        self.killed_at: dict | None = None
        self.stop_flag = threading.Event()

    def run(self) -> None:
        base = f"http://127.0.0.1:{self.ui_port}/api/v1/applications"
        while not self.stop_flag.is_set() and self.killed_at is None:
            try:
                (app,) = get_json(base)[:1]
                jobs = get_json(f"{base}/{app['id']}/jobs")
                done = sum(j["status"] == "SUCCEEDED" for j in jobs)
                running = [j for j in jobs if j["status"] == "RUNNING"]
                if done >= self.after_jobs and running:
                    self.cluster.kill(self.victim)
                    self.killed_at = {"jobs_succeeded": done, "running_job": running[0]["name"][:120],
                                      "app": app["id"]}
                    # the driver notices: the executor of the killed worker is no longer active
                    end = time.time() + 60
                    while time.time() < end:
                        lost = [e["id"] for e in get_json(f"{base}/{app['id']}/allexecutors")
                                if e["id"] != "driver" and not e["isActive"]]
                        if lost:
                            self.killed_at["executors_lost"] = lost
                            break
                        time.sleep(0.5)
                    return
            except (OSError, ValueError, KeyError):
                pass
            self.stop_flag.wait(0.3)


# --- spark-submit ---------------------------------------------------------------------------------

class Submitter:
    def __init__(self, venv: Path, work: Path, env: dict[str, str], delta: str):
        self.venv, self.work, self.env, self.delta = venv, work, env, delta
        self.spark_submit = Path(env["SPARK_HOME"]) / "bin" / "spark-submit"
        self.cwd = work / "submit"
        self.cwd.mkdir(parents=True, exist_ok=True)

    def command(self, master: str, script: Path, args: list[str], ui_port: int | None = None) -> list[str]:
        python = str(self.venv / "bin" / "python")
        cmd = [str(self.spark_submit), "--master", master, "--packages", self.delta,
               "--driver-memory", "2g", "--executor-memory", "1g",
               "--conf", f"spark.pyspark.python={python}", "--conf", f"spark.pyspark.driver.python={python}",
               "--conf", "spark.driver.host=127.0.0.1"]
        if ui_port:
            cmd += ["--conf", f"spark.ui.port={ui_port}"]
        return cmd + [str(script), *args]

    def submit(self, name: str, master: str, script: Path, args: list[str], ui_port: int | None = None,
               timeout: float = 1800, on_start=None) -> float:
        cmd = self.command(master, script, args, ui_port)
        logf = self.work / "logs" / f"{name}.log"
        log(f"{name}: " + " ".join(cmd) + f"  (log: {logf})")
        t = time.time()
        with open(logf, "wb") as out:
            p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                                 start_new_session=True)
            watcher = on_start(p) if on_start else None
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                raise RuntimeError(f"{name} did not finish within {timeout:.0f}s (log: {logf})") from None
            except BaseException:  # interrupted: the job goes too
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                raise
            finally:
                if watcher is not None:
                    watcher.stop_flag.set()
        took = time.time() - t
        if rc != 0:
            tail = logf.read_text(errors="replace").splitlines()[-40:]
            raise RuntimeError(f"{name} failed with exit code {rc} after {took:.0f}s (log: {logf}):\n" + "\n".join(tail))
        log(f"{name}: done in {took:.1f}s")
        return took


# --- the test ---------------------------------------------------------------------------------------

def pipeline_stages(venv: Path) -> list[str]:
    code = ("from recsys.config import load_config; from recsys.stages import pipeline; "
            f"print(' '.join(s.name for s in pipeline(load_config({str(CONFIG)!r}))))")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], check=True, capture_output=True, text=True,
                         cwd="/").stdout
    return out.split()


def latest_report(root: Path, name: str) -> dict:
    files = sorted((root / "_reports").glob(f"{name}-*.json"))
    return json.loads(files[-1].read_text()) if files else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scope", choices=("full", "small"), default="full")
    ap.add_argument("--work", default=str(ROOT / ".cluster"), help="working folder (node venv, logs, lakehouses)")
    ap.add_argument("--uv", default="python3.11 -m uv", help="how to call uv")
    ap.add_argument("--kill-after-jobs", type=int, default=6, help="SIGKILL a worker once this many jobs of "
                                                                   "build-profiles succeeded")
    ap.add_argument("--metric-tolerance", type=float, default=0.02,
                    help="largest difference allowed between the runs' training and evaluation figures")
    args = ap.parse_args(argv)
    # SIGTERM (a CI timeout, kill) ends the run through the same clean-up as an error.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t_start = time.time()
    work = Path(args.work).resolve()
    uv = args.uv.split()
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    for f in (work / "logs").glob("*.log"):
        f.unlink()
    for w in work.glob("worker*"):
        shutil.rmtree(w, ignore_errors=True)
    run_dir.mkdir(parents=True)

    wheel = build_wheel(work, uv)
    venv = node_env(work, uv, wheel)
    python = venv / "bin" / "python"
    spark_home = Path(subprocess.run([str(python), "-c", "import pyspark, os; print(os.path.dirname(pyspark.__file__))"],
                                     check=True, capture_output=True, text=True, cwd="/").stdout.strip())
    delta = subprocess.run([str(python), "-c", "from recsys.spark import delta_package; print(delta_package())"],
                           check=True, capture_output=True, text=True, cwd="/").stdout.strip()
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYSPARK_PYTHON",
                                                            "PYSPARK_DRIVER_PYTHON", "SPARK_HOME")}
    env.update({MARKER: marker, "SPARK_HOME": str(spark_home), "SPARK_LOCAL_IP": "127.0.0.1",
                "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}", "RECSYS_PSEUDONYM_KEY": KEY,
                "PYSPARK_PYTHON": str(python), "PYSPARK_DRIVER_PYTHON": str(python),
                "SPARK_CONF_DIR": str(work / "spark-conf")})
    (work / "spark-conf").mkdir(exist_ok=True)

    try:
        return _run(args, work, run_dir, venv, wheel, spark_home, delta, env, marker, t_start)
    finally:
        left = kill_leftovers(marker)  # whatever happened: nothing of this test keeps running
        if left:
            log(f"killed {len(left)} processes of this test that were still running: {left}")


def _run(args, work: Path, run_dir: Path, venv: Path, wheel: Path, spark_home: Path, delta: str, env: dict,
         marker: str, t_start: float) -> int:
    stages = list(SMALL_STAGES) if args.scope == "small" else [s for s in pipeline_stages(venv) if s != "generate"]
    landing = run_dir / "landing"
    lake = {"cluster": run_dir / "lake-cluster", "local": run_dir / "lake-local", "killed": run_dir / "lake-killed"}

    def conf_args(which: str) -> list[str]:
        return ["--config", str(CONFIG), f"lakehouse.root={lake[which]}", f"lakehouse.landing={landing}"]

    run([str(venv / "bin" / "recsys"), "generate", *conf_args("cluster")], env=env, cwd=run_dir)
    log(f"wheel {wheel.name}; node environment {venv}; stages: {' '.join(stages)}")

    cluster = Cluster(spark_home, work, env)
    sub = Submitter(venv, work, env, delta)
    results: dict = {"scope": args.scope, "stages": stages, "seconds": {}}
    failures: list[str] = []
    try:
        cluster.start()
        results["master"] = cluster.url

        # 4. where recsys comes from, in the driver and on the executors
        probe_out = run_dir / "probe.json"
        sub.submit("probe", cluster.url, ROOT / "tests" / "cluster" / "probe.py", [str(probe_out)],
                   ui_port=free_port())
        probe = json.loads(probe_out.read_text())
        results["probe"] = probe
        site = str(venv / "lib")
        for where in [probe["driver"], *probe["executors"]]:
            if not where["recsys"].startswith(site):
                failures.append(f"recsys imported from {where['recsys']}, not the wheel in {site} ({where})")
        workers_seen = {e["worker"] for e in probe["executors"]}
        if len(workers_seen) != 2:
            failures.append(f"the probe's tasks ran under {workers_seen}, not two workers")

        # 5. every stage on the cluster
        for stage in stages:
            script = ROOT / "jobs" / f"{stage.replace('-', '_')}.py"
            watcher = None

            def watch(p, stage=stage):
                nonlocal watcher
                if stage != "train":
                    return None
                roots = {pid: name for pid, name in cluster.pids().items()} | {p.pid: "driver"}
                watcher = TorchrunWatcher(roots, marker)
                watcher.start()
                return watcher

            results["seconds"][f"cluster:{stage}"] = sub.submit(f"cluster-{stage}", cluster.url, script,
                                                                conf_args("cluster"), ui_port=free_port(),
                                                                on_start=watch)
            if stage == "ingest":
                shutil.copytree(lake["cluster"], lake["killed"])  # the bronze tables for the killed-worker run
            if watcher is not None:
                seen = watcher.stop()
                results["torchrun"] = {str(k): {kk: vv for kk, vv in v.items() if kk != "chain"} for k, v in seen.items()}
                roots = sorted(v["root"] for v in seen.values())
                log(f"torch.distributed.run processes: {json.dumps(results['torchrun'])}")
                if roots != ["worker0", "worker1"] or not all(v["through_executor"] for v in seen.values()):
                    failures.append(f"TorchDistributor's processes ran under {roots}, not one under each worker's "
                                    f"executor: {results['torchrun']}")

        # 7. build-profiles again, killing a worker while it runs
        ui = free_port()
        killer = WorkerKiller(cluster, ui, "worker1", args.kill_after_jobs)

        def start_killer(p):
            killer.start()
            return killer

        results["seconds"]["killed:build-profiles"] = sub.submit(
            "killed-build-profiles", cluster.url, ROOT / "jobs" / "build_profiles.py", conf_args("killed"),
            ui_port=ui, on_start=start_killer)
        killer.join(timeout=5)
        results["killed_worker"] = killer.killed_at
        if killer.killed_at is None:
            failures.append("the worker was not killed while build-profiles ran (it finished first): lower "
                            "--kill-after-jobs")
        else:
            log(f"worker1 was killed at {killer.killed_at}; build-profiles completed on worker0")
        cluster.start_worker(1, name="worker1-replacement")
        cluster.wait_workers(2)
    finally:
        cluster.stop()
        left = kill_leftovers(marker)
        results["left_behind_after_stop"] = left
        if left:
            failures.append(f"processes left after stopping the cluster (killed now): {left}")
        log("cluster stopped" + (f"; killed {len(left)} leftover processes" if left else "; no process left"))

    # 6. the same stages on local[2] (the cluster is not needed any more)
    for stage in stages:
        script = ROOT / "jobs" / f"{stage.replace('-', '_')}.py"
        results["seconds"][f"local:{stage}"] = sub.submit(f"local-{stage}", "local[2]", script, conf_args("local"))

    # 8. compare (a local Spark of the node environment)
    tables = list(BRONZE_TABLES + PROFILE_TABLES)
    if args.scope == "full":
        tables += ["item_text_embeddings", "recommendations", "searches", "query_stats", "query_suggestions",
                   "search_results"]
    cmp_out = run_dir / "compare.json"
    sub.submit("compare", "local[2]", ROOT / "tests" / "cluster" / "compare_lakehouses.py",
               [str(cmp_out), f"local-vs-cluster={lake['local']},{lake['cluster']},{':'.join(tables)}",
                f"cluster-vs-killed={lake['cluster']},{lake['killed']},{':'.join(PROFILE_TABLES)}"])
    comparison = json.loads(cmp_out.read_text())
    results["comparison"] = comparison
    for c in comparison:
        if not c["equal"]:
            failures.append(f"{c['pair']} {c['table']}: {c['detail']}")
    if args.scope == "full":
        figures = compare_figures(lake["local"], lake["cluster"], args.metric_tolerance)
        results["figures"] = figures
        failures += figures["failures"]
    results["total_seconds"] = round(time.time() - t_start, 1)
    (work / "result.json").write_text(json.dumps(results, indent=2, default=str))
    log(f"result: {work / 'result.json'}")
    for c in comparison:
        log(f"  {c['pair']:<22} {c['table']:<22} rows {c['rows']:>6}  {'equal' if c['equal'] else 'DIFFERENT: ' + c['detail']}")
    log(f"total {results['total_seconds']:.0f}s")
    if failures:
        for f in failures:
            log("FAIL " + f)
        return 1
    log("PASS")
    return 0


def numbers(obj, prefix: str = "") -> dict[str, float]:
    """Every number in a nested report, by its dotted path."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in numbers(val, f"{prefix}{key}.").items()}
    if isinstance(obj, list):
        return {k: v for i, val in enumerate(obj) for k, v in numbers(val, f"{prefix}{i}.").items()}
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return {prefix.rstrip("."): float(obj)}
    return {}


def compare_figures(local: Path, cluster: Path, tol: float) -> dict:
    """The training history (loss and validation figures per epoch) and the evaluation metrics
    of the two runs: same data, same seed, same number of processes."""
    out: dict = {"failures": [], "tolerance": tol}
    for name, key in (("train", "history"), ("evaluate", "metrics")):
        a, b = numbers(latest_report(local, name).get(key)), numbers(latest_report(cluster, name).get(key))
        a = {k: v for k, v in a.items() if "second" not in k}
        b = {k: v for k, v in b.items() if "second" not in k}
        if not a or a.keys() != b.keys():
            out["failures"].append(f"{name} reports differ in shape: {sorted(a)} vs {sorted(b)}")
            continue
        diff = {k: abs(a[k] - b[k]) for k in a}
        worst = max(diff, key=diff.get)
        out[name] = {"figures": len(a), "identical": all(d == 0 for d in diff.values()),
                     "max_abs_diff": diff[worst], "at": worst, "local": a[worst], "cluster": b[worst]}
        if diff[worst] > tol:
            out["failures"].append(f"{name}: {worst} is {b[worst]} on the cluster, {a[worst]} on local[2] "
                                   f"(tolerance {tol})")
    return out


if __name__ == "__main__":
    sys.exit(main())
