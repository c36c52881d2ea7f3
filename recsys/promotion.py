"""Gated promotion: the champion alias moves to a new model only when it wins.

Training registers each new version under ``tracking.challenger_alias``; batch scoring and
served models use ``tracking.alias`` (the champion). ``recsys evaluate`` scores the
challenger, the champion and most-popular on the same held-out rows in one pass and records
the figures on the challenger's version (:func:`record_evaluation`); ``recsys promote`` then
decides (:func:`decide`):

* no champion yet: the challenger becomes champion (the first model);
* ``promotion.force`` (or ``--force``): it becomes champion whatever the figures;
* else it becomes champion only if its test NDCG@10 is at least the champion's minus
  ``promotion.tolerance`` *and* above most-popular's.

The decision, the reason and the figures it rests on are written as tags of the challenger's
version (``promotion.*``) and as a report (``promote-*.json``). ``recsys compare`` prints the
two versions side by side.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from recsys.config import Config
from recsys.errors import NoModelError, UsageError
from recsys.reports import write_report

EVAL_PREFIX = "eval."  # version tags written by evaluate: what promote decides on
DECISION_PREFIX = "promotion."


def record_evaluation(cfg: Config, version: str, ndcg_at_10: dict[str, float], champion_version: str | None) -> None:
    """Tag ``version`` with the test NDCG@10 of every scorer of one evaluation pass
    (``eval.model_ndcg_at_10``, ``eval.champion_ndcg_at_10``, ``eval.popularity_ndcg_at_10``, …)
    and the champion version it was measured against."""
    import mlflow

    client = mlflow.MlflowClient()
    tags = {f"{EVAL_PREFIX}{name}_ndcg_at_10": f"{v:.6f}" for name, v in ndcg_at_10.items()}
    tags[f"{EVAL_PREFIX}champion_version"] = champion_version or ""
    tags[f"{EVAL_PREFIX}time"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for k, v in tags.items():
        client.set_model_version_tag(cfg.tracking.model_name, version, k, v)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(challenger: float, champion: float | None, popularity: float, tolerance: float,
           force: bool = False) -> Decision:
    """Whether a challenger with test NDCG@10 ``challenger`` replaces a champion with
    ``champion`` (None: there is none), both measured beside most-popular's ``popularity``."""
    if champion is None:
        return Decision(True, "first model: there was no champion")
    if force:
        return Decision(True, "forced (promotion.force / --force), whatever the figures")
    if challenger <= popularity:
        return Decision(False, f"NDCG@10 {challenger:.4f} does not beat most-popular's {popularity:.4f}")
    if challenger < champion - tolerance:
        return Decision(False, f"NDCG@10 {challenger:.4f} is below the champion's {champion:.4f} "
                               f"minus the tolerance {tolerance:g}")
    return Decision(True, f"NDCG@10 {challenger:.4f} >= champion's {champion:.4f} - {tolerance:g} "
                          f"and > most-popular's {popularity:.4f}")


def promote(spark: Any, cfg: Config, force: bool = False) -> dict[str, Any]:
    """Move the champion alias to the challenger if it wins (see the module's rules); record why.

    Raises:
        NoModelError: there is no challenger (run `recsys train`).
        UsageError: the challenger was not evaluated against the current champion (run
            `recsys evaluate`).
    """
    import mlflow

    from recsys.tracking import registered_version

    name, t = cfg.tracking.model_name, cfg.tracking
    challenger = registered_version(cfg, t.challenger_alias)
    if challenger is None:
        raise NoModelError(f"no version of '{name}' has the alias '{t.challenger_alias}' in {cfg.tracking_uri}: "
                           f"run `recsys train` first")
    champion = registered_version(cfg, t.alias)
    report: dict[str, Any] = {"model_name": name, "challenger_version": str(challenger.version),
                              "champion_before": str(champion.version) if champion else None}
    if champion is not None and champion.version == challenger.version:
        report.update(promoted=False, decision="unchanged", champion_after=str(champion.version),
                      reason=f"version {champion.version} is already the champion")
        write_report(cfg, "promote", report)
        return report

    tags = challenger.tags or {}
    figure = lambda scorer: tags.get(f"{EVAL_PREFIX}{scorer}_ndcg_at_10")  # noqa: E731
    evaluated_against = tags.get(f"{EVAL_PREFIX}champion_version")
    forced = force or cfg.promotion.force
    if figure("model") is None or (champion is not None and not forced
                                   and evaluated_against != str(champion.version)):
        against = f"against champion version {champion.version} " if champion is not None else ""
        raise UsageError(f"version {challenger.version} of '{name}' has not been evaluated {against}yet: "
                         f"run `recsys evaluate` first (or `recsys promote --force`)")
    scores = {"challenger": float(figure("model")),
              "champion": float(figure("champion")) if champion is not None and figure("champion") else None,
              "popularity": float(figure("popularity") or 0.0)}
    decision = decide(scores["challenger"], scores["champion"], scores["popularity"], cfg.promotion.tolerance,
                      forced)
    client = mlflow.MlflowClient()
    if decision.promote:
        client.set_registered_model_alias(name, t.alias, challenger.version)
    after = str(challenger.version) if decision.promote else str(champion.version)
    record = {"decision": "promoted" if decision.promote else "kept", "reason": decision.reason,
              "challenger_ndcg_at_10": scores["challenger"], "champion_ndcg_at_10": scores["champion"],
              "popularity_ndcg_at_10": scores["popularity"], "champion_version": report["champion_before"] or "",
              "tolerance": cfg.promotion.tolerance, "forced": forced,
              "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    for k, v in record.items():
        client.set_model_version_tag(name, challenger.version, f"{DECISION_PREFIX}{k}", "" if v is None else str(v))
    report.update(promoted=decision.promote, decision=record["decision"], reason=decision.reason,
                  champion_after=after, scores=scores, tolerance=cfg.promotion.tolerance, forced=forced)
    write_report(cfg, "promote", report)
    return report


def compare(spark: Any, cfg: Config) -> dict[str, Any]:
    """The challenger and the champion side by side: versions, runs, training figures, the
    test figures of their last evaluation in one pass, and the promotion decision.

    Raises:
        NoModelError: neither alias is set.
    """
    import mlflow

    from recsys.tracking import registered_version

    t = cfg.tracking
    versions = {"challenger": registered_version(cfg, t.challenger_alias), "champion": registered_version(cfg, t.alias)}
    if not any(versions.values()):
        raise NoModelError(f"no version of '{t.model_name}' has the alias '{t.alias}' or '{t.challenger_alias}' "
                           f"in {cfg.tracking_uri}: run `recsys train` first")
    client = mlflow.MlflowClient()
    out: dict[str, Any] = {"model_name": t.model_name, "versions": {}, "same_pass": False}
    challenger, champion = versions["challenger"], versions["champion"]
    # The champion's figures from the challenger's evaluation (test_champion_* on the
    # challenger's run) when it was measured against this champion: same rows, same pass.
    same_pass = (challenger is not None and champion is not None
                 and (challenger.tags or {}).get(f"{EVAL_PREFIX}champion_version") == str(champion.version))
    out["same_pass"] = same_pass
    for role, mv in versions.items():
        if mv is None:
            continue
        run = client.get_run(mv.run_id)
        source, prefix = run.data.metrics, "test_model_"
        if role == "champion" and same_pass:
            source, prefix = client.get_run(challenger.run_id).data.metrics, "test_champion_"
        out["versions"][role] = {
            "version": str(mv.version),
            "run_id": mv.run_id,
            "created": dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.timezone.utc).isoformat(timespec="seconds"),
            "best_val_ndcg_at_10": run.data.metrics.get("best_val_ndcg_at_10"),
            "epochs_run": run.data.metrics.get("epochs_run"),
            "test": {k[len(prefix):]: v for k, v in source.items() if k.startswith(prefix)},
            "promotion": {k[len(DECISION_PREFIX):]: v for k, v in (mv.tags or {}).items() if k.startswith(DECISION_PREFIX)},
        }
    return out


def render_comparison(report: dict[str, Any]) -> str:
    """``compare``'s report as a table: one column per version."""
    v = report["versions"]
    roles = [r for r in ("challenger", "champion") if r in v]
    if len(roles) == 2 and v["challenger"]["version"] == v["champion"]["version"]:
        roles = ["champion"]
    head = ["", *[f"{r} (v{v[r]['version']})" for r in roles]]
    rows = [["run", *[v[r]["run_id"][:12] for r in roles]],
            ["created", *[v[r]["created"] for r in roles]],
            ["epochs", *[_fmt(v[r]["epochs_run"]) for r in roles]],
            ["best validation NDCG@10", *[_fmt(v[r]["best_val_ndcg_at_10"]) for r in roles]]]
    metrics = sorted({m for r in roles for m in v[r]["test"] if m != "users"}, key=_metric_order)
    rows += [[f"test {_label(m)}", *[_fmt(v[r]["test"].get(m)) for r in roles]] for m in metrics]
    rows += [["promotion", *[v[r]["promotion"].get("decision", "-") for r in roles]]]
    width = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]
    lines = [f"model '{report['model_name']}'", "  ".join(h.ljust(w) for h, w in zip(head, width))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, width)) for row in rows]
    if len(roles) == 2:
        lines.append("test figures: " + ("one evaluation pass, same rows" if report["same_pass"]
                                         else "each version's own last evaluation"))
    reason = v.get("challenger", {}).get("promotion", {}).get("reason")
    if reason:
        lines.append(f"last decision: {reason}")
    return "\n".join(lines)


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}" if isinstance(x, float) and not float(x).is_integer() else str(int(x)) if isinstance(x, float) else str(x)


def _label(metric: str) -> str:
    if metric == "mrr":
        return "MRR"
    kind, k = metric.split("_at_")
    return f"{kind.upper()}@{k}"


def _metric_order(metric: str) -> tuple:
    if metric == "mrr":
        return (2, 0)
    kind, k = metric.split("_at_")
    return (0 if kind == "hr" else 1, int(k))
