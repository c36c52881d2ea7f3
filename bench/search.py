"""Search benchmark (issue #21): ranking quality and suggestions on held-out days, and latency.

    python bench/search.py [--landing PATH] [--holdout-days 3] [--work DIR] [--skip-100k]
                           [--config conf/local.yaml] [--reuse] [key=value ...]

Data: by default the ``generate`` stage writes the default shop (2000 users, 600 items, 30
days) into the landing folder of a scratch lakehouse; ``--landing PATH`` uses any landing
folder of raw logs in the event contract instead (``events/``, ``catalog/``, ``users/``).

Temporal split, through the project's own stages (``stages.run_stage``):

* FULL (``<work>/full``): ``ingest`` of the whole landing, then ``build-search``, only to get
  the held-out searches and what their shoppers engaged with.
* cutoff = the newest ``event_date`` in FULL's events − ``--holdout-days``.
* TRAIN (``<work>/train``): a landing written from FULL's bronze tables (events with
  ``event_date <= cutoff``, the catalogue, the users) as JSON lines in the raw contract (``ts``
  as ISO-8601 UTC with milliseconds), ingested with ``privacy.pseudonymise=false`` (its ids are
  FULL's pseudonyms already, so users match), then ``build-profiles``, ``embed-text``,
  ``train``, ``evaluate``, ``promote``, ``build-search``, ``train-search-ranker``, defaults.

Quality: FULL's searches after the cutoff that were followed by an engagement, ranked over
the whole catalogue by the engine of TRAIN (``load_engine``: the registered recommender and
personalised ranker), each user as TRAIN's tables know them (everything there is before the
cutoff). Methods: BM25, embeddings, the hybrid (reciprocal-rank fusion), ``ranker_base`` (the
ranker fitted as ``train-search-ranker`` fits it, on the same training matrix, without the
user features) and ``ranker`` (the registered, personalised one). Graded NDCG@10, MRR (first
engaged item within the top 100) and HR@10 (``recsys.search.ranker.evaluate_methods``).

Suggestions: every held-out search's normalised query typed one character at a time (prefix
lengths 1..8, at most the query's length); the reciprocal rank of the query among the top 10
completions, most-popular (``personalise=False``) and personalised (TRAIN's profile and
earlier queries of the user), MRR@10 per prefix length.

Latency, in this warm process, torch at 1 thread (what ``load_network`` sets for serving):
``engine.search(q, state, 10)`` and ``engine.suggest(q[:3], state, 10)`` over 200 held-out
searches and their users (states prepared beforehand), at the demo catalogue and at a generated
100k-item one (random unit text embeddings: the cost does not depend on their values; an
untrained recommender of the default architecture; TRAIN's ranker and suggestions; users with
random histories of 20-50 items). ``--skip-100k`` skips the latter.

Prints a markdown block for bench/RESULTS.md and writes bench/results/search.json.
``--reuse`` keeps ``--work``'s two lakehouses from an earlier run that finished the pipeline
and measures again. Exit codes: 0 done, 2 a user mistake, 1 something failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import _machine  # bench/ is on sys.path when a benchmark runs as a script

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MARKER = ".recsys-bench-search"  # a work folder holding this file was made here and may be wiped
STATE = "_bench_state.json"  # the finished pipeline (cutoff, stage times), for --reuse
TRAIN_STAGES = ("ingest", "build-profiles", "embed-text", "train", "evaluate", "promote", "build-search",
                "train-search-ranker")
METHODS = ("bm25", "embeddings", "hybrid", "ranker_base", "ranker")
NON_PERSONAL = ("bm25", "embeddings", "hybrid", "ranker_base")
PREFIX_LENGTHS = range(1, 9)
GOAL_LENGTHS = range(1, 6)
SUGGEST_K = 10
LATENCY_QUERIES = 200
SUGGEST_PREFIX_CHARS = 3
BIG_ITEMS = 100_000
TORCH_THREADS = 1  # recsys.models.serving.load_network's default (RECSYS_SERVING_THREADS)
SEED = 0


class UsageError(Exception):
    """A user mistake: reported on one line, exit code 2."""


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


# --- machine -----------------------------------------------------------------------------------

def machine_info() -> dict[str, Any]:
    return _machine.machine_info()


def loadavg() -> list[float] | None:
    return _machine.loadavg()


def versions() -> dict[str, str]:
    return _machine.versions(("pyspark", "delta-spark", "torch", "mlflow", "lightgbm", "bm25s", "sentence-transformers"))


# --- configs and the work folder -----------------------------------------------------------------

def build_configs(args: argparse.Namespace, work: Path):
    """(FULL's config, TRAIN's config, the overrides this benchmark set)."""
    from recsys.config import ConfigError, load_config

    if any(o.split("=", 1)[0].strip().startswith("lakehouse.") for o in args.overrides):
        raise UsageError("lakehouse.* is set by this benchmark (use --work and --landing)")
    full = [f"lakehouse.root={work / 'full'}"]
    if args.landing:
        full.append(f"lakehouse.landing={args.landing}")
    train = [f"lakehouse.root={work / 'train'}", "privacy.pseudonymise=false", "ingest.full_refresh=true"]
    try:
        cfg_full = load_config(args.config, [*args.overrides, *full])
        cfg_train = load_config(args.config, [*args.overrides, *train])
    except ConfigError as e:
        raise UsageError(str(e)) from e
    return cfg_full, cfg_train, {"full": full, "train": train}


def prepare_work(work: Path, reuse: bool) -> dict[str, Any] | None:
    """The earlier run's state with --reuse; else an empty work folder (wiping one made here)."""
    if reuse:
        state = work / STATE
        if not state.is_file():
            raise UsageError(f"--reuse: {work} holds no finished pipeline of an earlier run")
        return json.loads(state.read_text())
    if work.exists():
        if (work / MARKER).is_file():
            shutil.rmtree(work)
        elif work.is_dir() and any(work.iterdir()):
            raise UsageError(f"work folder {work} is not empty and was not made by this benchmark: "
                             "pass an empty or new folder with --work")
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("made by bench/search.py; wiped at the start of each run\n")
    return None


# --- the temporal split --------------------------------------------------------------------------

def write_train_landing(spark, cfg_full, cfg_train, cutoff: dt.date) -> dict[str, int]:
    """TRAIN's landing folder from FULL's bronze tables, in the raw contract (every field a
    string, as the RAW_* schemas read them; ``ts`` ISO-8601 UTC with milliseconds)."""
    from pyspark.sql import functions as F

    from recsys import storage
    from recsys.tables import RAW_CATALOG_SCHEMA, RAW_EVENT_SCHEMA, RAW_USER_SCHEMA, read_table

    def raw(df, schema):
        cols = [(F.date_format("ts", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX") if f.name == "ts" else F.col(f.name).cast("string"))
                .alias(f.name) for f in schema.fields]
        return df.select(*cols)

    parts = {
        "events": raw(read_table(spark, cfg_full, "events").where(F.col("event_date") <= F.lit(cutoff)),
                      RAW_EVENT_SCHEMA),
        "catalog": raw(read_table(spark, cfg_full, "catalog"), RAW_CATALOG_SCHEMA),
        "users": raw(read_table(spark, cfg_full, "users"), RAW_USER_SCHEMA),
    }
    counts = {}
    for name, df in parts.items():
        df.write.mode("overwrite").json(storage.join(cfg_train.lakehouse.landing_uri, name))
        counts[name] = spark.read.schema(df.schema).json(storage.join(cfg_train.lakehouse.landing_uri, name)).count()
    return counts


def run_pipeline(spark, args, cfg_full, cfg_train, work: Path) -> dict[str, Any]:
    """Both lakehouses, stage by stage; the cutoff, the stage seconds and the reports' gist."""
    from pyspark.sql import functions as F

    from recsys import stages
    from recsys.tables import read_table

    timings: dict[str, dict[str, float]] = {"full": {}, "train": {}}
    reports: dict[str, Any] = {}

    def stage(side: str, name: str, cfg, fn=None):
        log(f"{side}: {name} ...")
        t = time.time()
        out = fn() if fn is not None else stages.run_stage(name, cfg, spark)
        timings[side][name] = round(time.time() - t, 1)
        log(f"{side}: {name} done in {timings[side][name]:.1f}s")
        return out

    if not args.landing:
        reports["generate"] = stage("full", "generate", cfg_full)
    stage("full", "ingest", cfg_full)
    stage("full", "build-search", cfg_full)
    newest = read_table(spark, cfg_full, "events").agg(F.max("event_date")).first()[0]
    if newest is None:
        raise UsageError("the landing folder holds no valid event")
    cutoff = newest - dt.timedelta(days=args.holdout_days)
    log(f"newest event day {newest}, cutoff {cutoff} (TRAIN keeps event_date <= cutoff)")

    landing = stage("train", "write landing", cfg_train, lambda: write_train_landing(spark, cfg_full, cfg_train, cutoff))
    for name in TRAIN_STAGES:
        reports[name] = stage("train", name, cfg_train)
    state = {
        "newest_event_date": str(newest), "cutoff": str(cutoff), "holdout_days": args.holdout_days,
        "timings_seconds": timings, "train_landing_rows": landing,
        "generate": reports.get("generate"),
        "recommender": {k: reports["train"].get(k) for k in ("epochs_run", "best_epoch", "best_val_ndcg_at_10",
                                                             "train_seconds", "model_version")},
        "recommender_test": {k: v for k, v in (reports["evaluate"].get("metrics") or {}).get("model", {}).items()
                             if k in ("hr_at_10", "ndcg_at_10", "mrr")},
        "promote": {k: reports["promote"].get(k) for k in ("promoted", "version", "reason") if k in reports["promote"]},
        "search_ranker": {k: reports["train-search-ranker"].get(k) for k in (
            "version", "promoted", "train_searches", "valid_searches", "train_rows", "best_iteration", "valid")},
    }
    (work / STATE).write_text(json.dumps(state, indent=2, default=str))
    return state


# --- quality -------------------------------------------------------------------------------------

def held_out(spark, cfg_full, cutoff: dt.date):
    """(FULL's searches after the cutoff, ordered by time; those followed by an engagement,
    with ``relevance``)."""
    import pandas as pd
    from pyspark.sql import functions as F

    from recsys.search.ranker import labelled_searches
    from recsys.tables import read_table

    every = read_table(spark, cfg_full, "searches").where(F.col("event_date") > F.lit(cutoff)) \
        .select("search_id", "user_id", "ts", "event_date", "query", "query_norm", "n_engaged") \
        .orderBy("ts", "search_id").toPandas()
    labelled = labelled_searches(spark, cfg_full)
    labelled = labelled[pd.to_datetime(labelled["event_date"]) > pd.Timestamp(cutoff)].reset_index(drop=True)
    return every, labelled


def ranker_without_users(spark, cfg_train, engine, users):
    """The ranker ``train-search-ranker`` fits, fitted the same way on the same training
    matrix but over BASE_FEATURES only; and what it was fitted on."""
    from recsys.search.engine import BASE_FEATURES
    from recsys.search.ranker import fit, labelled_searches, split_by_days, training_matrix

    searches = labelled_searches(spark, cfg_train)
    train_s, valid_s = split_by_days(searches, cfg_train.search.holdout_days)
    if len(train_s) == 0:
        train_s, valid_s = searches, searches.iloc[0:0]
    states = lambda df: users.states(engine, df["user_id"].tolist(), df["ts"].tolist())  # noqa: E731
    train_m = training_matrix(engine, train_s, states(train_s))
    valid_m = training_matrix(engine, valid_s, states(valid_s)) if len(valid_s) else None
    booster = fit(train_m, valid_m, BASE_FEATURES, cfg_train.train.seed)
    return booster, {"train_searches": len(train_s), "valid_searches": len(valid_s), "train_rows": len(train_m),
                     "best_iteration": booster.best_iteration}


def quality_goals(figures: dict[str, dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric in ("ndcg@10", "mrr"):
        best = max(NON_PERSONAL, key=lambda m: figures[m][metric])
        ratio = figures["ranker"][metric] / figures[best][metric] if figures[best][metric] > 0 else float("inf")
        out[f"personalised_vs_best_{metric}"] = {"best_non_personalised": best, "ratio": round(ratio, 3),
                                                 "goal": 1.10, "met": ratio >= 1.10}
        out[f"ranker_base_vs_hybrid_{metric}"] = {
            "ranker_base": figures["ranker_base"][metric], "hybrid": figures["hybrid"][metric],
            "met": figures["ranker_base"][metric] >= figures["hybrid"][metric]}
    return out


# --- suggestions ---------------------------------------------------------------------------------

def suggestion_quality(engine, states, queries: list[str]) -> dict[str, Any]:
    """MRR@10 of the typed query among the completions of each of its prefixes, most-popular
    and personalised, per prefix length."""
    rr = {mode: {n: [] for n in PREFIX_LENGTHS} for mode in ("mpc", "personalised")}
    personalised_users = 0
    for q, st in zip(queries, states):
        personalised_users += bool(st.known and (st.has_history or st.queries))
        for n in PREFIX_LENGTHS:
            if n > len(q):
                break
            for mode, personalise in (("mpc", False), ("personalised", True)):
                got = [s["query"] for s in engine.suggest(q[:n], st, SUGGEST_K, personalise=personalise)["suggestions"]]
                rr[mode][n].append(1.0 / (got.index(q) + 1) if q in got else 0.0)
    per_len = [{"length": n, "prefixes": len(rr["mpc"][n]),
                **{mode: round(sum(rr[mode][n]) / max(len(rr[mode][n]), 1), 4) for mode in rr}}
               for n in PREFIX_LENGTHS]
    mean = {mode: round(sum(r[mode] for r in per_len if r["length"] in GOAL_LENGTHS) / len(GOAL_LENGTHS), 4)
            for mode in rr}
    ratio = mean["personalised"] / mean["mpc"] if mean["mpc"] > 0 else float("inf")
    return {"searches": len(queries), "users_with_state": personalised_users, "per_length": per_len,
            "mean_1_5": mean, "goal": {"ratio": round(ratio, 3), "goal": 1.05, "met": ratio >= 1.05}}


# --- latency -------------------------------------------------------------------------------------

def percentiles(ms: list[float]) -> dict[str, float]:
    import numpy as np

    a = np.asarray(ms)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "max": round(float(a.max()), 2), "n": len(a)}


def measure(engine, queries: list[str], prefixes: list[str], states) -> dict[str, Any]:
    """p50/p95 ms of search and suggest over the sample, after a warm-up over its first 20.
    ``search_encoded``: the query-vector cache emptied before each call, so every query runs
    the sentence encoder (a query never seen before); ``search_cached``: a second pass, every
    query's vector in the cache (a repeated query: retrieval, features, ranker and reasons)."""
    def timed(calls) -> dict[str, float]:
        times = []
        for call in calls:
            t = time.perf_counter()
            call()
            times.append((time.perf_counter() - t) * 1000)
        return percentiles(times)

    def cold(q: str, st) -> None:
        engine.clear_cache()
        engine.search(q, st, 10)

    for q, p, st in list(zip(queries, prefixes, states))[:20]:
        engine.search(q, st, 10)
        engine.suggest(p, st, 10)
    out: dict[str, Any] = {}
    # the clearing itself is a dict.clear(): well under a microsecond
    out["search_encoded"] = timed([lambda q=q, st=st: cold(q, st) for q, st in zip(queries, states)])
    for q, st in zip(queries, states):  # every vector cached (the cache holds 4096 by default)
        engine.search(q, st, 10)
    out["search_cached"] = timed([lambda q=q, st=st: engine.search(q, st, 10) for q, st in zip(queries, states)])
    out["suggest"] = timed([lambda p=p, st=st: engine.suggest(p, st, 10) for p, st in zip(prefixes, states)])
    out["distinct_queries"] = len(set(queries))
    return out


def big_engine(cfg_train, engine, users, user_ids: list[str | None], n_items: int):
    """The engine over a generated ``n_items`` catalogue (random unit embeddings, an untrained
    recommender of the configured architecture, TRAIN's ranker, suggestions and query items),
    one state per user id (a random history of 20-50 items, the user's TRAIN queries), and
    the seconds each part took to build."""
    import numpy as np
    import torch

    from recsys.datagen import build_catalog, catalogue_profiles
    from recsys.models import Catalogue, build_model
    from recsys.search.engine import SearchEngine

    rng = np.random.default_rng(SEED)
    secs: dict[str, float] = {}
    t = time.time()
    items = catalogue_profiles(build_catalog(n_items, rng), cfg_train.features.price_buckets)
    secs["catalogue"] = round(time.time() - t, 1)
    dim = engine.embeddings.shape[1]
    emb = rng.standard_normal((n_items, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)

    t = time.time()
    by_idx = lambda col: [0, *items[col].astype(int).tolist()]  # noqa: E731  (N+1,), index 0 = padding
    trained = engine.recommender[0].spec if engine.recommender is not None else None
    text = None
    if cfg_train.model.text_features and getattr(trained, "text_dim", 0) > 0:
        text = np.vstack([np.zeros((1, dim), np.float32), emb]).tolist()
    catalogue = Catalogue(num_items=n_items, category=by_idx("category_idx"), brand=by_idx("brand_idx"),
                          price=by_idx("price_bucket"), num_categories=int(items["category_idx"].max()),
                          num_brands=int(items["brand_idx"].max()), num_price_buckets=int(items["price_bucket"].max()),
                          text=text)
    torch.manual_seed(cfg_train.train.seed)
    net = build_model(cfg_train.model, catalogue, cfg_train.features.max_seq_len).eval()
    with torch.no_grad():
        vectors = net.item_vectors()
    secs["recommender"] = round(time.time() - t, 1)

    t = time.time()
    big = SearchEngine(items, emb, engine.encode_query, recommender=(net, vectors), ranker=engine.ranker,
                       ranker_features=engine.ranker_features, suggestions=engine.suggestions,
                       query_items=engine.query_items, candidates=cfg_train.search.candidates)
    secs["engine_index"] = round(time.time() - t, 1)

    lengths = rng.integers(20, 51, len(user_ids))
    histories = [(rng.integers(1, n_items + 1, n), rng.integers(1, 5, n)) for n in lengths]  # types: view..purchase
    queries = [[q for _, q in users.queries.get(u, [])][-20:] if u is not None else [] for u in user_ids]
    t = time.time()
    states = big.user_states(histories, queries)
    secs["user_states"] = round(time.time() - t, 1)
    spec = net.spec
    arch = {k: getattr(spec, k) for k in ("num_items", "max_len", "hidden", "blocks", "heads", "text_dim")
            if hasattr(spec, k)}
    return big, states, secs, arch


# --- output --------------------------------------------------------------------------------------

def render(r: dict[str, Any]) -> str:
    f = lambda x: f"{x:.4f}"  # noqa: E731
    L = [f"## Search: quality, suggestions, latency (`bench/search.py`, issue #21)", "",
         "```", r["command"], "```", ""]
    m = r["machine"]
    L += [f"Run {r['started_at'][:16].replace('T', ' ')} UTC, {r['wall_seconds']:.0f} s wall; machine: {m['nproc']} "
          f"cores, {m['cpu_model']}, {m.get('mem_total_gib', '?')} GiB; load average {r['loadavg']['start']} at the "
          f"start, {r['loadavg']['end']} at the end.", ""]
    if r["reused_pipeline"]:
        L += [f"(`--reuse`: the two lakehouses and the stage seconds below come from an earlier run under "
              f"{r['work']}; everything else was measured again.)", ""]
    d = r["data"]
    L += [f"Data: {d['source']}. Newest event day {d['newest_event_date']}, cutoff {d['cutoff']} "
          f"(held out: the {d['holdout_days']} days after it). TRAIN landing rows: "
          + ", ".join(f"{k} {v:,}" for k, v in d["train_landing_rows"].items()) + ". "
          f"Held-out searches: {d['held_out_searches']:,}, {d['held_out_engaged']:,} followed by an engagement "
          f"({d['held_out_engaged_known_users']:,} of them by users TRAIN knows).", ""]
    t = r["timings_seconds"]
    L += ["| stage | seconds |", "|---|---|"]
    L += [f"| FULL {k} | {v:.1f} |" for k, v in t["full"].items()]
    L += [f"| TRAIN {k} | {v:.1f} |" for k, v in t["train"].items()]
    L += [f"| bench: {k} | {v:.1f} |" for k, v in t["bench"].items()]
    rec = r["recommender"]
    L += ["", f"Recommender (TRAIN): {rec.get('epochs_run')} epochs, best {rec.get('best_epoch')}, test "
              + ", ".join(f"{k} {v:.4f}" for k, v in r["recommender_test"].items())
          + f". Search ranker (TRAIN, registered v{r['search_ranker'].get('version')}): "
          f"{r['search_ranker'].get('train_searches')} training searches, {r['search_ranker'].get('valid_searches')} "
          f"validation, {r['search_ranker'].get('train_rows'):,} rows, best iteration "
          f"{r['search_ranker'].get('best_iteration')}; ranker_base best iteration {r['ranker_base']['best_iteration']}.", ""]

    q = r["quality"]
    L += [f"**Ranking quality**, {d['held_out_engaged']:,} held-out searches followed by an engagement, full "
          "catalogue, graded NDCG@10 (gain 2^rel − 1, rel = deepest funnel step), MRR (first engaged item, top 100), "
          "HR@10:", "",
          "| method | NDCG@10 | MRR | HR@10 |", "|---|---|---|---|"]
    for name in METHODS:
        x = q[name]
        L.append(f"| {name} | {f(x['ndcg@10'])} | {f(x['mrr'])} | {f(x['hr@10'])} |")
    g = r["quality_goals"]
    L += [""]
    for metric, label in (("ndcg@10", "NDCG@10"), ("mrr", "MRR")):
        a, b = g[f"personalised_vs_best_{metric}"], g[f"ranker_base_vs_hybrid_{metric}"]
        L.append(f"- personalised ≥ 1.10 × best non-personalised ({a['best_non_personalised']}) on {label}: "
                 f"{a['ratio']:.3f}× — {'met' if a['met'] else 'NOT met'}")
        L.append(f"- ranker_base ≥ hybrid on {label}: {f(b['ranker_base'])} vs {f(b['hybrid'])} — "
                 f"{'met' if b['met'] else 'NOT met'}")
    s = r["suggestions"]
    L += ["", f"**Suggestions**, {s['searches']:,} held-out searches ({s['users_with_state']:,} by users with a "
              f"profile or earlier queries in TRAIN), MRR@10 of the typed query by prefix length:", "",
          "| prefix length | prefixes | most popular | personalised |", "|---|---|---|---|"]
    for x in s["per_length"]:
        L.append(f"| {x['length']} | {x['prefixes']:,} | {f(x['mpc'])} | {f(x['personalised'])} |")
    L.append(f"| mean 1–5 | | {f(s['mean_1_5']['mpc'])} | {f(s['mean_1_5']['personalised'])} |")
    L += ["", f"- personalised ≥ 1.05 × most popular (mean over lengths 1–5): {s['goal']['ratio']:.3f}× — "
              f"{'met' if s['goal']['met'] else 'NOT met'}"]

    lat = r["latency"]
    L += ["", f"**Latency**, warm process, torch {lat['torch_threads']} thread(s), {lat['queries']} held-out searches "
              f"with their users (states prepared beforehand); search = `engine.search(query, state, 10)` (raw "
              f"query text), suggest = `engine.suggest(first {SUGGEST_PREFIX_CHARS} characters of the normalised "
              "query, state, 10)`, personalised; ms:", "",
          "| catalogue | items | search p50 | search p95 | search p50, query cached | p95 | suggest p50 | suggest p95 |",
          "|---|---|---|---|---|---|---|---|"]
    for name, x in lat["catalogues"].items():
        L.append(f"| {name} | {x['items']:,} | {x['search_encoded']['p50']:.1f} | {x['search_encoded']['p95']:.1f} | "
                 f"{x['search_cached']['p50']:.1f} | {x['search_cached']['p95']:.1f} | "
                 f"{x['suggest']['p50']:.2f} | {x['suggest']['p95']:.2f} |")
    L.append("")
    if "100k" in lat["catalogues"]:
        x = lat["catalogues"]["100k"]
        L += [f"- at 100k: p95 search ≤ 50 ms: {x['search_encoded']['p95']:.1f} ms with the query encoded "
                  f"({'met' if x['search_encoded']['p95'] <= 50 else 'NOT met'}), {x['search_cached']['p95']:.1f} ms "
                  f"with its vector cached ({'met' if x['search_cached']['p95'] <= 50 else 'NOT met'}); p95 suggest ≤ 10 ms: "
                  f"{x['suggest']['p95']:.2f} ms ({'met' if x['suggest']['p95'] <= 10 else 'NOT met'})",
              f"- the 100k catalogue: `catalogue_profiles(build_catalog(100000))`, random unit text embeddings "
              f"(dimension {x['embedding_dim']}; latency does not depend on their values), an untrained "
              f"recommender of the default architecture ({x['recommender']}), TRAIN's ranker and suggestions, "
              f"users with random histories of 20–50 items and their TRAIN queries; built in "
              + ", ".join(f"{k} {v:.0f} s" for k, v in x["build_seconds"].items()) + "."]
    L += ["- \"search\": the engine's query-vector cache emptied before each call, so the sentence encoder runs "
          "every time (a query never seen before); \"query cached\": a second pass over the same queries with "
          f"their vectors cached ({lat['catalogues']['demo']['distinct_queries']} distinct queries of {lat['queries']})."]
    return "\n".join(L)


# --- main ----------------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/search.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--landing", default=None, help="a landing folder of raw logs (events/, catalog/, users/); "
                                                   "default: generate the default shop")
    p.add_argument("--holdout-days", type=int, default=3, help="days after the cutoff held out (default 3)")
    p.add_argument("--work", default="/tmp/bench-search/work", help="scratch folder for the two lakehouses "
                                                                    "(wiped at the start; default /tmp/bench-search/work)")
    p.add_argument("--threads", type=int, default=TORCH_THREADS,
                   help=f"torch threads of the warm serving process (default {TORCH_THREADS}; the machine's cores: 2)")
    p.add_argument("--skip-100k", action="store_true", help="skip the latency at a generated 100k-item catalogue")
    p.add_argument("--config", default=str(REPO / "conf" / "local.yaml"), help="config overlay; default conf/local.yaml")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "search.json"), help="the JSON file to write")
    p.add_argument("--reuse", action="store_true", help="reuse --work's lakehouses from an earlier run that finished "
                                                        "the pipeline; measure again")
    p.add_argument("overrides", nargs="*", help="key=value config overrides for both lakehouses, e.g. train.epochs=5")
    return p.parse_intermixed_args(argv)


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    if args.holdout_days < 1:
        raise UsageError(f"--holdout-days must be at least 1, got {args.holdout_days}")
    if args.landing and not Path(args.landing, "events").is_dir():
        raise UsageError(f"--landing {args.landing} has no events/ folder")
    work = Path(args.work).expanduser().resolve()
    cfg_full, cfg_train, ours = build_configs(args, work)
    state = prepare_work(work, args.reuse)

    from recsys.cli import configure_logging

    configure_logging()
    import numpy as np
    import torch

    from recsys.search.service import load_engine
    from recsys.search.ranker import evaluate_methods
    from recsys.spark import get_spark

    started = dt.datetime.now(dt.timezone.utc)
    t_start = time.time()
    load_start = loadavg()
    bench: dict[str, float] = {}

    t = time.time()
    spark = get_spark(cfg_full)
    bench["spark start"] = round(time.time() - t, 1)
    if state is None:
        state = run_pipeline(spark, args, cfg_full, cfg_train, work)
    else:
        log(f"reusing the lakehouses under {work} (cutoff {state['cutoff']})")
    cutoff = dt.date.fromisoformat(state["cutoff"])

    t = time.time()
    every, labelled = held_out(spark, cfg_full, cutoff)
    engine, users, info = load_engine(spark, cfg_train)
    if engine.ranker is None or engine.recommender is None:
        raise RuntimeError(f"TRAIN has no registered ranker or recommender: {info}")
    torch.set_num_threads(args.threads)
    bench["load held-out searches and engine"] = round(time.time() - t, 1)
    log(f"engine: {info}; held-out searches {len(every)}, engaged {len(labelled)}")

    t = time.time()
    base, base_info = ranker_without_users(spark, cfg_train, engine, users)
    bench["fit ranker_base"] = round(time.time() - t, 1)
    log(f"ranker_base: {base_info}")

    t = time.time()
    states = users.states(engine, labelled["user_id"].tolist())
    quality = evaluate_methods(engine, labelled, states, {"ranker_base": base, "ranker": engine.ranker})
    bench["evaluate methods"] = round(time.time() - t, 1)
    log(f"quality: {quality}")

    t = time.time()
    every_states = users.states(engine, every["user_id"].tolist())
    suggestions = suggestion_quality(engine, every_states, every["query_norm"].tolist())
    bench["suggestions"] = round(time.time() - t, 1)
    log(f"suggestions: {suggestions['mean_1_5']}")

    t = time.time()
    pick = np.sort(np.random.default_rng(SEED).choice(len(every), min(LATENCY_QUERIES, len(every)), replace=False))
    sample = every.iloc[pick].reset_index(drop=True)
    queries = sample["query"].tolist()
    prefixes = [q[:SUGGEST_PREFIX_CHARS] for q in sample["query_norm"]]
    sample_states = users.states(engine, sample["user_id"].tolist())
    catalogues = {"demo": {"items": engine.n, **measure(engine, queries, prefixes, sample_states)}}
    bench["latency demo"] = round(time.time() - t, 1)
    log(f"latency demo: {catalogues['demo']}")
    if not args.skip_100k:
        t = time.time()
        big, big_states, secs, arch = big_engine(cfg_train, engine, users, sample["user_id"].tolist(), BIG_ITEMS)
        torch.set_num_threads(args.threads)
        catalogues["100k"] = {"items": big.n, **measure(big, queries, prefixes, big_states),
                              "build_seconds": secs, "recommender": arch, "embedding_dim": int(big.embeddings.shape[1])}
        bench["latency 100k (build included)"] = round(time.time() - t, 1)
        log(f"latency 100k: {catalogues['100k']}")
        del big

    known = set(users.steps) | set(users.queries)
    source = (f"landing {args.landing}" if args.landing else
              "the default generated shop ({users} users, {items} items, {days} days)".format(**{
                  k: (state.get("generate") or {}).get(k, "?") for k in ("users", "items", "days")}))
    result: dict[str, Any] = {
        "benchmark": "search",
        "started_at": started.isoformat(),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "command": " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/search.py", *argv]),
        "reused_pipeline": bool(args.reuse),
        "config_overrides": {"bench": ours, "user": list(args.overrides), "config_file": args.config},
        "work": str(work),
        "data": {
            "source": source, "newest_event_date": state["newest_event_date"], "cutoff": state["cutoff"],
            "holdout_days": state["holdout_days"], "train_landing_rows": state["train_landing_rows"],
            "held_out_searches": len(every), "held_out_engaged": len(labelled),
            "held_out_engaged_known_users": int(labelled["user_id"].isin(known).sum()),
            "catalogue_items": engine.n, "engine": info,
        },
        "recommender": state["recommender"], "recommender_test": state["recommender_test"],
        "search_ranker": state["search_ranker"], "ranker_base": base_info,
        "quality": quality, "quality_goals": quality_goals(quality),
        "suggestions": suggestions,
        "latency": {"torch_threads": torch.get_num_threads(), "queries": len(sample), "catalogues": catalogues,
                    "suggest_prefix": f"first {SUGGEST_PREFIX_CHARS} characters of the normalised query",
                    "personalised": True},
        "timings_seconds": {**state["timings_seconds"], "bench": bench},
        "machine": machine_info(),
        "loadavg": {"start": load_start, "end": loadavg()},
        "versions": versions(),
    }
    result["wall_seconds"] = round(time.time() - t_start, 1)
    result["markdown"] = render(result)
    out = Path(args.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print("\n" + result["markdown"])
    print(f"\nResults written to {out}")
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        run(args, argv)
    except UsageError as e:
        print(f"bench/search.py: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a stage or a measurement failed: the traceback, then one line saying so
        import traceback

        from recsys.errors import RecsysError

        if isinstance(e, RecsysError):
            print(f"bench/search.py: error: {e}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(f"bench/search.py: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
