"""Data-layer performance benchmark: ingest + build_profiles on generated shops, per Spark master.

    python bench/pipeline.py [--events 1000000 5000000] [--masters 'local[1]' 'local[2]']
                             [--root /tmp/recsys-bench-pipeline] [--out bench/results/pipeline.json]
                             [--days 100] [--seed 7] [--malformed-rate 0.001] [--driver-memory 4g]
                             [--config conf/local.yaml] [--keep-lakehouses] [--regenerate] [key=value ...]

What it measures (the goals of the issue):

* full build: ``ingest(spark, cfg, full=True)`` then ``build_profiles`` on every landing file
  but the last day's; seconds per stage, event lines per second, peak memory;
* cost against size: time(largest) / time(smallest), goal <= 1.1 x the ratio of their event
  counts (time(5M) <= 5.5 x time(1M));
* parallelism: time(first master) / time(each other master), goal >= 1.6 (local[1] / local[2]),
  and its *ceiling* on this machine: time(first master) x usable cores / the JVM CPU seconds of
  the other master's full build. No schedule does that CPU work on those cores in less time, so
  the ratio cannot exceed the ceiling unless the build needs less CPU;
* incremental run: the held-back last day's file (about 1% of the events at 100 days) arrives
  in the landing folder, then ``ingest(spark, cfg)`` (new files only) and ``build_profiles``
  again (``full=False`` when build_profiles has that keyword); goal: incremental <= 10% of full.
  Before it, a *floor* run: the held-back file's first --floor-lines lines (default 100) arrive
  alone and go through the same two calls. Its time is what any incremental run costs whatever
  its size (Spark jobs, Delta snapshots and commits); the 1% run then gets the rest of the day.

Data: for each size a shop is generated ONCE with ``recsys.datagen.generate_shop`` (users and
items calibrated on a small generation so that the good events come near the target) and
cached under ``<root>/data/<size, seed, days, malformed rate>/`` (regenerated when
recsys/datagen.py changes, or with --regenerate). The shop's last day is yesterday (UTC):
ingest quarantines events more than a day ahead of the clock (``future_timestamp``), so
generate_shop's fixed default start date cannot be used with 100 days. Generation is not part
of the figures; its time and memory are reported.

Each (size, master) is measured in a fresh child process (``--child SPEC``: the master cannot
change inside one JVM) with its own fresh lakehouse under ``<root>/runs/``, whose landing
folder holds hard links to the cached files. Spark start-up is timed but not included in the
figures. Config: conf/base.yaml + --config + ``lakehouse.root=<run dir>``,
``spark.master=<master>``, ``spark.driver_memory`` (--driver-memory), then key=value overrides.

Memory: the parent samples the RSS of the child's whole process tree (the child Python, the
Spark JVM it launches and any Python workers) every --interval seconds with psutil; the peak
is reported per stage (samples inside the stage's time window), for the full and incremental
builds, and for the whole child (Spark start-up included). RSS summed over processes counts
shared pages once per process, so it is an upper bound. Processes younger than 1 s are not
summed: the JVM forks helpers (chmod, readlink via jspawnhelper) that show the JVM's own RSS
for a moment and would count it twice.

CPU: each stage records the Spark JVM's CPU seconds (user + system, from /proc on Linux) by
thread kind: Spark's task threads, the JIT compilers, the garbage collector, and the rest
(driver, scheduler, Delta, Py4J); threads that ended inside the stage are counted apart.
The output gives them for each full build, with the cores kept busy (CPU / wall seconds).

key=value overrides go before --events/--masters or after ``--`` (those options take lists).

Exit codes: 0 measured (goals met or not: see the output), 2 a user mistake, 1 a run failed.
Figures depend on the machine and on what else runs on it: the JSON records the cores, the
memory and the load average before and after every run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import _machine  # bench/ is on sys.path when a benchmark runs as a script

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MARKER = ".recsys-bench-pipeline"  # a root holding this file was made here; its runs/ may be wiped
GOAL_SCALING = 1.1  # time(big) / time(small) <= 1.1 x events(big) / events(small)  (5.5 for 5M / 1M)
GOAL_SPEEDUP = 1.6  # time(local[1]) / time(local[2]) >= 1.6
GOAL_INCREMENTAL = 0.10  # incremental (ingest + profiles) <= 10% of the full build
BYTES_PER_EVENT_GEN = 1.3 * 2**10  # generate_shop keeps every event in memory: about this much each
MiB = 2**20
MIN_AGE_S = 1.0  # processes younger than this are not summed (transient forks of the JVM)


class UsageError(Exception):
    """A user mistake: reported on one line, exit code 2."""


# --- machine -----------------------------------------------------------------------------


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    import psutil

    cpu_model, usable = _machine.cpu_model(), _machine.usable_cores()
    vm = psutil.virtual_memory()
    return {"cores": os.cpu_count(), "cores_usable": usable, "cpu_model": cpu_model,
            "mem_total_gib": round(vm.total / 2**30, 1), "mem_available_gib_at_start": round(vm.available / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version()}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("pyspark", "delta-spark", "numpy", "pyarrow", "psutil"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    try:
        r = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        first = (r.stderr or r.stdout).strip().splitlines()
        if first:
            out["java"] = first[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return out


# --- memory sampling ---------------------------------------------------------------------


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process and all its descendants every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int, int, int]] = []  # (time, total rss, processes, largest rss)
        self.names: dict[float, list[tuple[str, float]]] = {}  # time -> (process name, rss MiB), per sample
        self.young: dict[str, float] = {}  # name -> largest RSS MiB of a skipped young process
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._halt.is_set():
            t = time.time()
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            total = n = largest = 0
            names = []
            for p in procs:
                try:
                    # A process younger than MIN_AGE_S is skipped: the JVM forks helpers (vfork
                    # + exec) that report the JVM's own RSS for a moment and would count it twice.
                    young = p.pid != self.pid and t - p.create_time() < MIN_AGE_S
                    rss = p.memory_info().rss
                    name = p.name()
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                if young:
                    self.young[name] = max(self.young.get(name, 0.0), round(rss / MiB, 1))
                    names.append((f"{name} (younger than {MIN_AGE_S:g}s, not counted)", round(rss / MiB, 1)))
                    continue
                total, n, largest = total + rss, n + 1, max(largest, rss)
                names.append((name, round(rss / MiB, 1)))
            if n:
                self.samples.append((t, total, n, largest))
                self.names[t] = names
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def peak(self, windows: list[tuple[float, float]] | None = None) -> dict[str, Any] | None:
        """The peak over the samples inside any of ``windows`` (all samples when None)."""
        sel = [s for s in self.samples if windows is None or any(a <= s[0] <= b for a, b in windows)]
        if not sel:
            return None
        top = max(sel, key=lambda s: s[1])
        return {"peak_rss_mib": round(top[1] / MiB, 1), "largest_process_rss_mib": round(top[3] / MiB, 1),
                "processes": top[2], "at_peak": self.names.get(top[0]), "samples": len(sel)}


# --- children ------------------------------------------------------------------------------


def run_child(spec: dict[str, Any], spec_path: Path, log_path: Path, interval: float) -> tuple[dict[str, Any], TreeSampler, int]:
    """Run ``--child spec`` in a fresh interpreter; stream its ``[bench]`` lines; sample its memory.

    Returns the child's result (its ``result`` file), the sampler, and the exit code.
    """
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    result_path = Path(spec["result"])
    result_path.unlink(missing_ok=True)
    spec_path.write_text(json.dumps(spec, indent=2))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
                                cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", bufsize=1)
        sampler = TreeSampler(proc.pid, interval)
        sampler.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if line.startswith("[bench]"):
                    print("    " + line.rstrip(), flush=True)
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            sampler.stop()
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    if rc != 0 or "error" in result or not result:
        tail = log_path.read_text(errors="replace").splitlines()[-25:]
        print(f"    child failed (exit {rc}); last lines of {log_path}:", file=sys.stderr)
        for line in tail:
            print(f"      {line}", file=sys.stderr)
        result.setdefault("error", f"child exited with code {rc} (log {log_path})")
    return result, sampler, rc


def child_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["result"])
    try:
        result = child_generate(spec) if spec["mode"] == "generate" else child_measure(spec)
        code = 0
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which goes on with other runs
        traceback.print_exc()
        result, code = {"error": f"{type(e).__name__}: {e}"}, 1
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return code


def child_generate(spec: dict[str, Any]) -> dict[str, Any]:
    from recsys.datagen import generate_shop

    t = time.perf_counter()
    summary = generate_shop(spec["landing"], users=spec["users"], items=spec["items"], days=spec["days"],
                            seed=spec["seed"], malformed_rate=spec["malformed_rate"],
                            start=dt.date.fromisoformat(spec["start"]))
    return {"summary": summary, "seconds": round(time.perf_counter() - t, 2)}


THREAD_KINDS = (("tasks", "Executor task"), ("jit", "C1 CompilerThre", "C2 CompilerThre"),
                ("gc", "GC Thread", "G1 ", "VM Thread"))  # /proc comm names are cut at 15 characters


def jvm_cpu_snapshot(pid: int) -> dict[str, Any] | None:
    """The JVM's CPU seconds (user + system) so far: the whole process's, and each live thread's
    with its kind. From /proc (Linux); None elsewhere."""
    proc = Path(f"/proc/{pid}")
    if not proc.is_dir():
        return None
    tick = os.sysconf("SC_CLK_TCK")

    def cpu(stat: Path) -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    threads = {}
    for t in (proc / "task").iterdir():
        try:
            comm = (t / "comm").read_text().strip()
            threads[t.name] = (next((k[0] for k in THREAD_KINDS if comm.startswith(k[1:])), "other"), cpu(t / "stat"))
        except OSError:  # the thread ended meanwhile
            continue
    return {"total": cpu(proc / "stat"), "threads": threads}


def jvm_cpu_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """CPU seconds by thread kind between two snapshots. Threads that ended in between are
    counted in the total but cannot be told apart: their seconds are ``ended_threads``."""
    out = {k[0]: 0.0 for k in THREAD_KINDS} | {"other": 0.0}
    for tid, (kind, secs) in after["threads"].items():
        out[kind] += secs - before["threads"].get(tid, (kind, 0.0))[1]
    out["ended_threads"] = after["total"] - before["total"] - sum(out.values())
    out["total"] = after["total"] - before["total"]
    return {k: round(v, 1) for k, v in out.items()}


def child_measure(spec: dict[str, Any]) -> dict[str, Any]:
    from recsys.cli import configure_logging

    configure_logging()
    from recsys.config import load_config
    from recsys.features.profiles import build_profiles
    from recsys.ingest.pipeline import ingest
    from recsys.spark import get_spark

    cfg = load_config(spec["config"], spec["overrides"])
    stages: dict[str, dict[str, float]] = {}
    reports: dict[str, Any] = {}

    jvm_pid: list[int] = []

    def stage(name: str, fn, *a, **kw):
        print(f"[bench] {name} ...", flush=True)
        cpu0 = jvm_cpu_snapshot(jvm_pid[0]) if jvm_pid else None
        start, t = time.time(), time.perf_counter()
        out = fn(*a, **kw)
        secs = time.perf_counter() - t
        stages[name] = {"start": start, "end": time.time(), "seconds": round(secs, 3)}
        cpu1 = jvm_cpu_snapshot(jvm_pid[0]) if cpu0 is not None else None
        if cpu1 is not None:
            stages[name]["jvm_cpu_seconds"] = jvm_cpu_between(cpu0, cpu1)
        print(f"[bench] {name} done in {secs:.1f}s", flush=True)
        return out

    spark = stage("spark_start", get_spark, cfg)
    sc = spark.sparkContext
    jvm_pid.append(int(sc._jvm.java.lang.ProcessHandle.current().pid()))
    reports["ingest_full"] = stage("ingest_full", ingest, spark, cfg, full=True)
    reports["profiles_full"] = stage("profiles_full", build_profiles, spark, cfg, full=True)

    # The held-back day arrives (not timed: that is the shop's job, not ours). With a floor run,
    # its first lines arrive first, on their own, and the rest after that run.
    held = Path(spec["held_back"])
    landing = cfg.lakehouse.landing_path / "events"
    floor_lines = int(spec.get("floor_lines") or 0)
    lines: list[str] = []
    if floor_lines:
        with open(held, encoding="utf-8") as src:
            lines = src.readlines()
        if floor_lines >= len(lines):  # nothing would be left for the 1% run: no floor run
            print(f"[bench] the held-back file has {len(lines)} lines, not more than --floor-lines "
                  f"{floor_lines}: no floor run", flush=True)
            floor_lines = 0
    if floor_lines:
        (landing / f"{held.stem}-first{floor_lines}{held.suffix}").write_text("".join(lines[:floor_lines]), encoding="utf-8")
        reports["ingest_floor"] = stage("ingest_floor", ingest, spark, cfg)
        reports["profiles_floor"] = stage("profiles_floor", build_profiles, spark, cfg)
        (landing / held.name).write_text("".join(lines[floor_lines:]), encoding="utf-8")
    else:
        shutil.copyfile(held, landing / held.name)
    reports["ingest_incremental"] = stage("ingest_incremental", ingest, spark, cfg)
    reports["profiles_incremental"] = stage("profiles_incremental", build_profiles, spark, cfg)

    info = {"master": sc.master, "default_parallelism": sc.defaultParallelism,
            "driver_memory": spark.conf.get("spark.driver.memory", None),
            "shuffle_partitions": spark.conf.get("spark.sql.shuffle.partitions", None),
            "spark_version": spark.version}
    t = time.perf_counter()
    spark.stop()
    info["spark_stop_seconds"] = round(time.perf_counter() - t, 2)
    return {"stages": stages, "reports": reports, "spark": info,
            "config": cfg.to_flat_dict()}


# --- data ----------------------------------------------------------------------------------


def datagen_hash() -> str:
    return hashlib.sha256((REPO / "recsys" / "datagen.py").read_bytes()).hexdigest()[:16]


def items_for(target: int) -> int:
    """Catalogue size grows with the shop: about one item per 350 events (600 at least)."""
    return int(min(100_000, max(600, round(target / 350))))


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n


def prepare_data(args: argparse.Namespace, target: int, root: Path) -> dict[str, Any]:
    """The cached landing folder for ``target`` good events (generated on first use)."""
    key = f"events{target}-seed{args.seed}-days{args.days}-bad{args.malformed_rate:g}"
    d = root / "data" / key
    meta_path = d / "meta.json"
    sha = datagen_hash()
    today = dt.datetime.now(dt.timezone.utc).date()
    if meta_path.is_file() and not args.regenerate:
        meta = json.loads(meta_path.read_text())
        if (meta.get("datagen_sha") == sha and (d / "landing" / "events").is_dir()
                and meta.get("last_day", "9999-12-31") < today.isoformat()
                and (d / "heldback" / meta.get("held_back_file", "-")).is_file()):
            print(f"[bench] {target:,} events: reusing the shop generated in {d} "
                  f"({meta['good_events']:,} good events, generated in {meta['generation']['seconds']:.0f}s)")
            return {**meta, "cached": True}
        print(f"[bench] {target:,} events: cached shop in {d} is stale or incomplete: generating again")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)

    items = items_for(target)
    cal_users = int(min(2000, max(300, target // 100)))
    # The shop's last day is yesterday: ingest quarantines events more than a day in the future
    # (future_timestamp), and generate_shop's default start (2026-10-01) plus 100 days would
    # put later days there once the clock is before them.
    start = today - dt.timedelta(days=args.days)
    base = {"items": items, "days": args.days, "seed": args.seed, "malformed_rate": args.malformed_rate,
            "start": start.isoformat()}
    print(f"[bench] {target:,} events: calibrating on {cal_users} users x {items} items x {args.days} days ...",
          flush=True)
    cal, cal_sampler, rc = run_child({"mode": "generate", "landing": str(d / "_calibration" / "landing"),
                                      "users": cal_users, **base, "result": str(d / "_calibration" / "result.json")},
                                     d / "_calibration" / "spec.json", root / "logs" / f"{key}-calibrate.log",
                                     args.interval)
    if rc != 0 or "error" in cal:
        raise RuntimeError(f"calibration generation failed: {cal.get('error')}")
    shutil.rmtree(d / "_calibration", ignore_errors=True)
    per_user = cal["summary"]["good_events"] / cal_users
    users = max(1, round(target / per_user))
    est_s = cal["seconds"] * users / cal_users
    est_gib = target * BYTES_PER_EVENT_GEN / 2**30
    print(f"[bench] {target:,} events: {per_user:.1f} good events per user over {args.days} days -> {users:,} users; "
          f"generating (estimate {est_s:.0f}s, {est_gib:.1f} GiB in one process) ...", flush=True)
    if est_s > 120 or est_gib > 4:
        print(f"[bench] note: generate_shop builds the whole shop in memory in one Python process: "
              f"~{est_s / 60:.0f} min and ~{est_gib:.1f} GiB for {target:,} events (once; cached afterwards)",
              flush=True)
    gen, gen_sampler, rc = run_child({"mode": "generate", "landing": str(d / "landing"), "users": users, **base,
                                      "result": str(d / "generate-result.json")},
                                     d / "generate-spec.json", root / "logs" / f"{key}-generate.log", args.interval)
    if rc != 0 or "error" in gen:
        raise RuntimeError(f"generation failed: {gen.get('error')}")
    summary = gen["summary"]
    gen_peak = gen_sampler.peak() or {}

    # Hold the last day back for the incremental run.
    files = sorted((d / "landing" / "events").glob("events-*.jsonl"))
    last = files[-1]
    (d / "heldback").mkdir()
    held = d / "heldback" / last.name
    shutil.move(str(last), str(held))
    held_lines = count_lines(held)
    meta = {
        "key": key,
        "target_good_events": target,
        "users": users,
        "items": items,
        "days": args.days,
        "start": start.isoformat(),
        "last_day": (start + dt.timedelta(days=args.days - 1)).isoformat(),
        "seed": args.seed,
        "malformed_rate": args.malformed_rate,
        "good_events": summary["good_events"],
        "event_lines": summary["events_written"],
        "malformed_lines": summary["malformed_lines"],
        "sessions": summary["sessions"],
        "held_back_file": held.name,
        "held_back_lines": held_lines,
        "held_back_share": round(held_lines / max(1, summary["events_written"]), 5),
        "full_build_event_lines": summary["events_written"] - held_lines,
        "landing_bytes": sum(p.stat().st_size for p in (d / "landing").rglob("*") if p.is_file()),
        "held_back_bytes": held.stat().st_size,
        "generation": {"seconds": gen["seconds"], "events_per_second": round(summary["events_written"] / max(gen["seconds"], 1e-9)),
                       "peak_rss_mib": gen_peak.get("peak_rss_mib"),
                       "estimate_seconds": round(est_s, 1)},
        "calibration": {"users": cal_users, "good_events": cal["summary"]["good_events"],
                        "good_events_per_user": round(per_user, 2), "seconds": cal["seconds"],
                        "peak_rss_mib": (cal_sampler.peak() or {}).get("peak_rss_mib")},
        "datagen_sha": sha,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")  # last: its presence means the folder is complete
    print(f"[bench] {target:,} events: generated {summary['good_events']:,} good events "
          f"({summary['events_written']:,} lines) in {gen['seconds']:.1f}s "
          f"({meta['generation']['events_per_second']:,} lines/s, peak {gen_peak.get('peak_rss_mib', '?')} MiB); "
          f"held back {held.name} ({held_lines:,} lines, {100 * meta['held_back_share']:.2f}%)", flush=True)
    return {**meta, "cached": False}


def link_tree(src: Path, dst: Path) -> None:
    """Hard links (copies across file systems) of every file under ``src`` into ``dst``."""
    for p in sorted(src.rglob("*")):
        if p.is_file():
            target = dst / p.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(p, target)
            except OSError:
                shutil.copy2(p, target)


def prepare_root(root: Path) -> None:
    if root.exists():
        if not root.is_dir():
            raise UsageError(f"--root {root} exists and is not a folder")
        if not (root / MARKER).is_file() and any(root.iterdir()):
            raise UsageError(f"--root {root} is not empty and was not made by this benchmark: pass an empty or new folder")
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("made by bench/pipeline.py: data/ is a cache of generated shops, runs/ is scratch\n")


# --- one measurement -------------------------------------------------------------------------


def slug(master: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", master).strip("-") or "default"


def _rate(n: int | None, secs: float | None) -> float | None:
    return round(n / secs) if n and secs else None


def measure(args: argparse.Namespace, data: dict[str, Any], master: str, root: Path) -> dict[str, Any]:
    name = f"{data['key']}-{slug(master)}"
    run_dir = root / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    data_dir = root / "data" / data["key"]
    link_tree(data_dir / "landing", run_dir / "landing")
    overrides = [f"lakehouse.root={run_dir}", "lakehouse.landing=", f"spark.master={master}",
                 "spark.app_name=recsys-bench-pipeline"]
    if args.driver_memory:
        overrides.append(f"spark.driver_memory={args.driver_memory}")
    overrides += list(args.overrides)
    spec = {"mode": "measure", "config": args.config, "overrides": overrides,
            "held_back": str(data_dir / "heldback" / data["held_back_file"]), "result": str(run_dir / "result.json"),
            "floor_lines": args.floor_lines}
    print(f"[bench] {data['full_build_event_lines']:,} event lines on {master} ({run_dir}) ...", flush=True)
    load_before = loadavg()
    wall = time.perf_counter()
    res, sampler, rc = run_child(spec, run_dir / "spec.json", root / "logs" / f"{name}.log", args.interval)
    wall = round(time.perf_counter() - wall, 1)
    load_after = loadavg()
    run: dict[str, Any] = {"events_target": data["target_good_events"], "master": master,
                           "child_wall_seconds": wall, "loadavg_before": load_before, "loadavg_after": load_after,
                           "log": str(root / "logs" / f"{name}.log")}
    if "error" in res:
        run["error"] = res["error"]
        run["child_peak"] = sampler.peak()
        return run
    st, rep = res["stages"], res["reports"]

    def secs(s: str) -> float:
        return st[s]["seconds"]

    def win(*names: str) -> list[tuple[float, float]]:
        return [(st[n]["start"], st[n]["end"]) for n in names]

    def pk(*names: str) -> float | None:
        p = sampler.peak(win(*names))
        return p["peak_rss_mib"] if p else None

    full_lines = rep["ingest_full"].get("events", {}).get("read")
    full_accepted = rep["ingest_full"].get("events", {}).get("accepted")
    inc_lines = rep["ingest_incremental"].get("events", {}).get("read")
    full_total = secs("ingest_full") + secs("profiles_full")
    inc_total = secs("ingest_incremental") + secs("profiles_incremental")
    prof_inc = rep["profiles_incremental"] if isinstance(rep["profiles_incremental"], dict) else {}
    run.update({
        "spark_start_seconds": secs("spark_start"),
        "spark": res["spark"],
        "full": {
            "event_lines": full_lines,
            "events_accepted": full_accepted,
            "ingest_seconds": secs("ingest_full"),
            "profiles_seconds": secs("profiles_full"),
            "total_seconds": round(full_total, 3),
            "events_per_second": _rate(full_lines, full_total),
            "ingest_events_per_second": _rate(full_lines, secs("ingest_full")),
            "profiles_events_per_second": _rate(full_accepted, secs("profiles_full")),
            "peak_rss_mib": pk("ingest_full", "profiles_full"),
            "ingest_peak_rss_mib": pk("ingest_full"),
            "profiles_peak_rss_mib": pk("profiles_full"),
            "jvm_cpu_seconds": _cpu_sum(st, "ingest_full", "profiles_full"),
        },
        "incremental": {
            "event_lines": inc_lines,
            "share_of_full_lines": round(inc_lines / full_lines, 5) if inc_lines and full_lines else None,
            "ingest_seconds": secs("ingest_incremental"),
            "profiles_seconds": secs("profiles_incremental"),
            "total_seconds": round(inc_total, 3),
            "profiles_mode": prof_inc.get("mode"),
            "affected_users": prof_inc.get("affected_users"),
            "affected_items": prof_inc.get("affected_items"),
            "peak_rss_mib": pk("ingest_incremental", "profiles_incremental"),
        },
        "incremental_over_full": round(inc_total / full_total, 4) if full_total else None,
        **_floor(rep, st, full_total),
        "peak_rss_mib": pk("ingest_full", "profiles_full", "ingest_incremental", "profiles_incremental"),
        "child_peak": sampler.peak(),
        "young_processes_not_counted": sampler.young,
        "stages": st,
        "reports": rep,
    })
    if not args.keep_lakehouses:
        shutil.rmtree(run_dir, ignore_errors=True)
        run["lakehouse_kept"] = False
    else:
        run["lakehouse_kept"] = str(run_dir)
    f = run["full"]
    print(f"[bench]   full {f['total_seconds']:.1f}s (ingest {f['ingest_seconds']:.1f}s + profiles "
          f"{f['profiles_seconds']:.1f}s), {f['events_per_second'] or 0:,} events/s, peak {f['peak_rss_mib']} MiB; "
          f"incremental {inc_total:.1f}s = {run['incremental_over_full']:.2f} of full", flush=True)
    return run


def _cpu_sum(st: dict[str, Any], *names: str) -> dict[str, float] | None:
    """The stages' JVM CPU seconds by thread kind, added up (None without /proc)."""
    parts = [st[n].get("jvm_cpu_seconds") for n in names]
    if any(p is None for p in parts):
        return None
    return {k: round(sum(p[k] for p in parts), 1) for k in parts[0]}


def _cores_busy(run: dict[str, Any]) -> float | None:
    """The full build's JVM CPU seconds per wall-clock second."""
    cpu = run["full"].get("jvm_cpu_seconds")
    return round(cpu["total"] / run["full"]["total_seconds"], 2) if cpu and run["full"]["total_seconds"] else None


def _floor(rep: dict[str, Any], st: dict[str, Any], full_total: float) -> dict[str, Any]:
    """The floor run's figures (absent without --floor-lines)."""
    if "ingest_floor" not in st:
        return {}
    total = st["ingest_floor"]["seconds"] + st["profiles_floor"]["seconds"]
    prof = rep["profiles_floor"] if isinstance(rep["profiles_floor"], dict) else {}
    return {
        "floor": {"event_lines": rep["ingest_floor"].get("events", {}).get("read"),
                  "ingest_seconds": st["ingest_floor"]["seconds"], "profiles_seconds": st["profiles_floor"]["seconds"],
                  "total_seconds": round(total, 3), "profiles_mode": prof.get("mode"),
                  "affected_users": prof.get("affected_users")},
        "floor_over_full": round(total / full_total, 4) if full_total else None,
    }


# --- ratios and goals ----------------------------------------------------------------------


def _all_or_none(flags: list[bool]) -> bool | None:
    return all(flags) if flags else None


def speedup_ceiling(baseline: dict[str, Any], other: dict[str, Any], cores: int | None) -> float | None:
    """The most the other master's full build could gain over the baseline's on this machine,
    given the CPU it took: ``cores`` cores cannot do its JVM CPU seconds in less than
    (CPU / cores) seconds, so time(baseline) / time(other) <= time(baseline) * cores / CPU.
    The JVM's CPU leaves out Python's, so the true ceiling is at most this (None without /proc)."""
    cpu = other["full"].get("jvm_cpu_seconds")
    if not cores or not cpu or not cpu.get("total"):
        return None
    return round(baseline["full"]["total_seconds"] * cores / cpu["total"], 3)


def assess(runs: list[dict[str, Any]], sizes: list[int], masters: list[str],
           cores: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    ok = {(r["events_target"], r["master"]): r for r in runs if "error" not in r}
    scaling, speedup, incremental = [], [], []
    small = min(sizes)
    for m in masters:
        a = ok.get((small, m))
        for big in sorted(s for s in sizes if s != small):
            b = ok.get((big, m))
            if a is None or b is None:
                continue
            ev = b["full"]["event_lines"] / a["full"]["event_lines"]
            t = b["full"]["total_seconds"] / a["full"]["total_seconds"]
            allowed = GOAL_SCALING * ev
            scaling.append({"master": m, "small": small, "big": big, "event_ratio": round(ev, 3),
                            "time_ratio": round(t, 3), "allowed_time_ratio": round(allowed, 3),
                            "time_ratio_per_event_ratio": round(t / ev, 3),
                            "ingest_time_ratio": round(b["full"]["ingest_seconds"] / a["full"]["ingest_seconds"], 3),
                            "profiles_time_ratio": round(b["full"]["profiles_seconds"] / a["full"]["profiles_seconds"], 3),
                            "met": t <= allowed})
    base = masters[0]
    for s in sizes:
        a = ok.get((s, base))
        for m in masters[1:]:
            b = ok.get((s, m))
            if a is None or b is None:
                continue
            x = a["full"]["total_seconds"] / b["full"]["total_seconds"]
            speedup.append({"events_target": s, "baseline": base, "master": m, "speedup": round(x, 3),
                            "ingest_speedup": round(a["full"]["ingest_seconds"] / b["full"]["ingest_seconds"], 3),
                            "profiles_speedup": round(a["full"]["profiles_seconds"] / b["full"]["profiles_seconds"], 3),
                            "ceiling": speedup_ceiling(a, b, cores),
                            "baseline_cores_busy": _cores_busy(a), "cores_busy": _cores_busy(b),
                            "met": x >= GOAL_SPEEDUP})
    for (s, m), r in sorted(ok.items(), key=lambda kv: (kv[0][0], masters.index(kv[0][1]))):
        incremental.append({"events_target": s, "master": m, "ratio": r["incremental_over_full"],
                            "floor_ratio": r.get("floor_over_full"),
                            "met": r["incremental_over_full"] is not None and r["incremental_over_full"] <= GOAL_INCREMENTAL})
    ratios = {"scaling": scaling, "speedup": speedup, "incremental": incremental}
    met = {
        "linear_scaling": _all_or_none([x["met"] for x in scaling]),
        "parallel_speedup": _all_or_none([x["met"] for x in speedup]),
        "incremental": _all_or_none([x["met"] for x in incremental]),
    }
    met["all"] = None if None in met.values() else all(met.values())
    if len(ok) < len(runs):
        met["all"] = False if met["all"] is False else None
    return ratios, met


# --- output ----------------------------------------------------------------------------------


def _yn(x: bool | None) -> str:
    return "n/a" if x is None else ("yes" if x else "NO")


def _f(x: Any, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def render(result: dict[str, Any]) -> str:
    L = ["Data (generated once, cached; generation is not in the figures):",
         f"  {'target':>10} {'good events':>12} {'lines (full)':>13} {'held back':>10} {'share':>6} "
         f"{'users':>7} {'items':>6} {'gen s':>7} {'gen MiB':>8}"]
    for d in result["data"].values():
        g = d["generation"]
        L.append(f"  {d['target_good_events']:>10,} {d['good_events']:>12,} {d['full_build_event_lines']:>13,} "
                 f"{d['held_back_lines']:>10,} {100 * d['held_back_share']:>5.2f}% {d['users']:>7,} {d['items']:>6,} "
                 f"{g['seconds']:>7.1f} {_f(g.get('peak_rss_mib'), '>8.0f')}" + ("  (cached)" if d.get("cached") else ""))
    L += ["", "Full build (ingest full=True + build_profiles) and incremental run (+1 day), seconds; Spark start excluded:",
          f"  {'events':>10} {'master':<10} {'start':>6} {'ingest':>8} {'profiles':>9} {'total':>8} {'events/s':>9} "
          f"{'peak MiB':>9} | {'inc lines':>9} {'ingest':>7} {'profiles':>9} {'total':>7} {'inc/full':>8} {'mode':<11}"]
    for r in result["runs"]:
        if "error" in r:
            L.append(f"  {r['full_build_event_lines'] if 'full_build_event_lines' in r else r['events_target']:>10,} "
                     f"{r['master']:<10} FAILED: {r['error']}")
            continue
        f, i = r["full"], r["incremental"]
        L.append(f"  {f['event_lines']:>10,} {r['master']:<10} {r['spark_start_seconds']:>6.1f} {f['ingest_seconds']:>8.1f} "
                 f"{f['profiles_seconds']:>9.1f} {f['total_seconds']:>8.1f} {_f(f['events_per_second'], '>9,')} "
                 f"{_f(f['peak_rss_mib'], '>9.0f')} | {_f(i['event_lines'], '>9,')} {i['ingest_seconds']:>7.1f} "
                 f"{i['profiles_seconds']:>9.1f} {i['total_seconds']:>7.1f} {_f(r['incremental_over_full'], '>8.3f')} "
                 f"{i['profiles_mode'] or 'rebuild':<11}")
        cpu = f.get("jvm_cpu_seconds")
        if cpu:
            L.append(f"  {'':>10} {'':<10} JVM CPU in the full build: {cpu['total']:.0f}s = "
                     f"{cpu['total'] / f['total_seconds']:.2f} cores busy; tasks {cpu['tasks']:.0f}s, JIT compilers "
                     f"{cpu['jit']:.0f}s, GC {cpu['gc']:.0f}s, other threads {cpu['other'] + cpu['ended_threads']:.0f}s")
        if "floor" in r:
            fl = r["floor"]
            L.append(f"  {'':>10} {'':<10} floor run before it: {_f(fl['event_lines'], ',')} lines, ingest "
                     f"{fl['ingest_seconds']:.1f}s + profiles {fl['profiles_seconds']:.1f}s = {fl['total_seconds']:.1f}s "
                     f"= {_f(r['floor_over_full'], '.3f')} of full ({_f(fl['affected_users'], ',')} users affected)")
    L.append("  peak MiB: RSS summed over the child's process tree (Python + Spark JVM + workers) during "
             "the full build's stages")
    ra, met = result["ratios"], result["goals_met"]
    L += ["", "Goals:"]
    for x in ra["scaling"]:
        L.append(f"  cost vs size  {x['master']:<10} time({x['big']:,})/time({x['small']:,}) = {x['time_ratio']:.2f} "
                 f"for {x['event_ratio']:.2f}x events (ingest {x['ingest_time_ratio']:.2f}, profiles "
                 f"{x['profiles_time_ratio']:.2f}); goal <= {x['allowed_time_ratio']:.2f}: {_yn(x['met'])}")
    for x in ra["speedup"]:
        L.append(f"  parallelism   {x['events_target']:>10,} events: time({x['baseline']})/time({x['master']}) = "
                 f"{x['speedup']:.2f} (ingest {x['ingest_speedup']:.2f}, profiles {x['profiles_speedup']:.2f}); "
                 f"goal >= {GOAL_SPEEDUP}: {_yn(x['met'])}")
        if x.get("ceiling") is not None:
            L.append(f"  {'':>13} ceiling on this machine: {x['ceiling']:.2f} = time({x['baseline']}) x "
                     f"{result['machine']['cores_usable']} cores / the JVM CPU of {x['master']}'s full build "
                     f"({x['baseline']} kept {x['baseline_cores_busy']:.2f} cores busy, {x['master']} "
                     f"{x['cores_busy']:.2f})")
    for x in ra["incremental"]:
        L.append(f"  incremental   {x['events_target']:>10,} events {x['master']:<10} incremental/full = "
                 f"{_f(x['ratio'], '.3f')}; goal <= {GOAL_INCREMENTAL}: {_yn(x['met'])}"
                 + (f" (floor run alone: {x['floor_ratio']:.3f})" if x.get("floor_ratio") is not None else ""))
    L.append(f"  met: cost grows linearly {_yn(met['linear_scaling'])}, parallel speedup "
             f"{_yn(met['parallel_speedup'])}, incremental {_yn(met['incremental'])}; all {_yn(met['all'])}")
    for n in result.get("notes", []):
        L.append(f"  note: {n}")
    m = result["machine"]
    L.append(f"machine: {m['cores']} cores ({m['cores_usable']} usable), {m['cpu_model']}, {m['mem_total_gib']} GiB; "
             f"load average before {result['loadavg']['before']} / after {result['loadavg']['after']}")
    return "\n".join(L)


# --- main --------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9][0-9_]*(?:\.[0-9]+)?)\s*([kKmM]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not an event count: {text!r} (e.g. 1000000, 1M, 200k)")
    n = float(m.group(1).replace("_", "")) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2).lower()]
    if n < 1000:
        raise argparse.ArgumentTypeError(f"event count {text!r} is too small (1000 at least)")
    return int(n)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/pipeline.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", nargs="+", type=parse_size, default=[1_000_000, 5_000_000],
                   help="target good-event counts, one shop each (default 1000000 5000000; 1M, 200k work too)")
    p.add_argument("--masters", nargs="+", default=["local[1]", "local[2]"],
                   help="Spark masters; the first is the baseline of the speed-up ratios (default local[1] local[2])")
    p.add_argument("--root", default="/tmp/recsys-bench-pipeline",
                   help="scratch folder: data/ caches the generated shops, runs/ the lakehouses, logs/ the child logs")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "pipeline.json"), help="the JSON file to write")
    p.add_argument("--days", type=int, default=100, help="days of events; the last day's file is the incremental run "
                                                          "(default 100: about 1%% of the events)")
    p.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    p.add_argument("--malformed-rate", type=float, default=0.001, help="share of broken event lines (default 0.001)")
    p.add_argument("--driver-memory", default=None,
                   help="spark.driver_memory for every run (default: the config's, 4g in conf/base.yaml)")
    p.add_argument("--config", default=str(REPO / "conf" / "local.yaml"), help="config overlay; default conf/local.yaml")
    p.add_argument("--floor-lines", type=int, default=100,
                   help="before the 1%% run, ingest and build the held-back day's first N lines alone: the cost of "
                        "any incremental run (default 100; 0: no floor run)")
    p.add_argument("--interval", type=float, default=0.5, help="memory sampling interval in seconds (default 0.5)")
    p.add_argument("--keep-lakehouses", action="store_true", help="keep each run's lakehouse under <root>/runs/")
    p.add_argument("--regenerate", action="store_true", help="generate the shops again even when cached")
    p.add_argument("--reassess", default=None, metavar="JSON",
                   help="measure nothing: recompute the ratios and goals of an earlier result file with this "
                        "script's rules (the speed-up ceiling, for one) and print them; the file is not changed")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="key=value config overrides for every run, e.g. spark.shuffle_partitions=8")
    args = p.parse_intermixed_args(argv)
    if args.child is None:
        if args.days < 2:
            p.error("--days must be at least 2 (the last day is held back)")
        if not 0.0 <= args.malformed_rate < 0.5:
            p.error("--malformed-rate must be in [0, 0.5)")
        if args.interval <= 0:
            p.error("--interval must be positive")
        if args.floor_lines < 0:
            p.error("--floor-lines must be 0 or more")
        args.events = list(dict.fromkeys(args.events))
        args.masters = list(dict.fromkeys(args.masters))
        bad = [m for m in args.masters if "=" in m]
        if bad:
            p.error(f"--masters took {bad[0]!r}: put key=value overrides before --masters or after --")
    return args


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    try:
        import psutil  # noqa: F401
    except ImportError as e:
        raise UsageError("psutil is not installed in this interpreter (it is in requirements.lock): run `make setup`") from e
    from recsys.config import ConfigError, load_config

    root = Path(args.root).expanduser().resolve()
    out_path = Path(args.out).expanduser()
    try:  # check the config and overrides once, before generating anything
        cfg = load_config(args.config, [f"lakehouse.root={root / 'runs' / 'check'}", f"spark.master={args.masters[0]}"]
                          + ([f"spark.driver_memory={args.driver_memory}"] if args.driver_memory else [])
                          + list(args.overrides))
    except ConfigError as e:
        raise UsageError(str(e)) from e
    prepare_root(root)
    started = dt.datetime.now(dt.timezone.utc)
    load_before = loadavg()
    machine = machine_info()
    notes: list[str] = []
    if load_before and load_before[0] > 0.5 * (machine["cores_usable"] or 1):
        notes.append(f"the machine was busy at the start (load average {load_before[0]} on "
                     f"{machine['cores_usable']} cores): timings are upper bounds and ratios are noisy")
    for m in args.masters:
        k = re.fullmatch(r"local\[(\d+)\]", m)
        if k and int(k.group(1)) > (machine["cores_usable"] or 1):
            notes.append(f"{m} asks for more threads than the {machine['cores_usable']} usable cores")

    data: dict[str, dict[str, Any]] = {}
    for size in args.events:
        data[str(size)] = prepare_data(args, size, root)
    slow = [d for d in data.values() if not d.get("cached") and d["generation"]["seconds"] > 120]
    for d in slow:
        notes.append(f"generating {d['good_events']:,} events with generate_shop took {d['generation']['seconds']:.0f}s "
                     f"in one process (peak {d['generation']['peak_rss_mib']} MiB); cached for reruns")

    runs = []
    for size in args.events:
        for master in args.masters:
            r = measure(args, data[str(size)], master, root)
            r["full_build_event_lines"] = data[str(size)]["full_build_event_lines"]
            runs.append(r)
    for r in runs:
        if "error" in r:
            continue
        ev_full, ev_inc = r["reports"]["ingest_full"].get("events", {}), r["reports"]["ingest_incremental"].get("events", {})
        if ev_full.get("read") and ev_full.get("quarantined", 0) > max(10, 3 * args.malformed_rate * ev_full["read"]):
            notes.append(f"{r['events_target']:,} events on {r['master']}: the full ingest quarantined "
                         f"{ev_full['quarantined']:,} of {ev_full['read']:,} lines ({ev_full.get('quarantined_by_rule')}), "
                         f"far more than the malformed share {args.malformed_rate}")
        if not ev_inc.get("accepted"):
            notes.append(f"{r['events_target']:,} events on {r['master']}: the incremental ingest accepted no events "
                         f"({ev_inc.get('quarantined_by_rule')}): its figures do not measure an update")
    notes.append("the incremental run reuses the full build's Spark session (warm JVM); Spark start-up is "
                 "measured separately and excluded")

    ratios, met = assess(runs, args.events, args.masters, machine["cores_usable"])
    result: dict[str, Any] = {
        "benchmark": "pipeline",
        "started_at": started.isoformat(),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, "bench/pipeline.py", *argv]),
        "goals": {"linear_scaling": f"time(big)/time(small) <= {GOAL_SCALING} x events(big)/events(small) "
                                    "(time(5M) <= 5.5 x time(1M)), full build, per master",
                  "parallel_speedup": f"time({args.masters[0]})/time(other master) >= {GOAL_SPEEDUP}, full build, per size",
                  "incremental": f"(incremental ingest + profiles) / (full ingest + profiles) <= {GOAL_INCREMENTAL}"},
        "goals_met": met,
        "ratios": ratios,
        "settings": {"events": args.events, "masters": args.masters, "days": args.days, "seed": args.seed,
                     "malformed_rate": args.malformed_rate, "driver_memory": cfg.spark.driver_memory,
                     "shuffle_partitions": cfg.spark.shuffle_partitions, "config_file": args.config,
                     "overrides": list(args.overrides), "root": str(root), "sampling_interval_s": args.interval,
                     "floor_lines": args.floor_lines,
                     "memory": "peak of the summed RSS of the child's process tree (Python, Spark JVM, workers), "
                               "sampled by the parent; per stage from the samples inside the stage's window"},
        "data": data,
        "runs": runs,
        "notes": notes,
        "machine": machine,
        "versions": versions(),
        "loadavg": {"before": load_before, "after": loadavg()},
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print()
    print(render(result))
    print(f"\nResults written to {out_path}")
    return result


def reassess(path: Path) -> int:
    """Print an earlier result file's figures with the ratios and goals recomputed."""
    try:
        result = json.loads(path.read_text())
        result["ratios"], result["goals_met"] = assess(result["runs"], result["settings"]["events"],
                                                       result["settings"]["masters"], result["machine"]["cores_usable"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"bench/pipeline.py: error: --reassess {path}: not a readable result of this benchmark ({e})", file=sys.stderr)
        return 2
    print(render(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child is not None:
        return child_main(args.child)
    if args.reassess is not None:
        return reassess(Path(args.reassess))
    try:
        result = run(args, argv)
    except UsageError as e:
        print(f"bench/pipeline.py: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # generation failed, or a bug here: the traceback, then one line
        traceback.print_exc()
        print(f"bench/pipeline.py: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 1 if any("error" in r for r in result["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
