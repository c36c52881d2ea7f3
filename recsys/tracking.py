"""MLflow conventions: where runs go, what they log, how models are registered and found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recsys import storage
from recsys.config import Config
from recsys.errors import NoModelError


def registry_uri(tracking_uri: str, model_name: str = "") -> str:
    """The model registry's URI: the tracking server's, except on Databricks for a three-level
    model name ``catalog.schema.model``, which lives in Unity Catalog (``databricks-uc``)."""
    if model_name.count(".") == 2 and (tracking_uri == "databricks" or tracking_uri.startswith("databricks://")):
        return "databricks-uc" + tracking_uri[len("databricks"):]
    return tracking_uri


def setup_mlflow(tracking_uri: str, artifact_location: str, experiment: str, model_name: str = "") -> str:
    """Point MLflow at ``tracking_uri`` (and the registry of ``model_name``, see
    :func:`registry_uri`) and return the id of ``experiment`` (created if absent)."""
    import mlflow

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri(tracking_uri, model_name))
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is not None:
        return exp.experiment_id
    kwargs: dict[str, Any] = {}
    if artifact_location:
        if storage.local_path(artifact_location) is not None and not artifact_location.startswith("file:"):
            Path(artifact_location).mkdir(parents=True, exist_ok=True)
            artifact_location = Path(artifact_location).resolve().as_uri()
        kwargs["artifact_location"] = artifact_location
    return mlflow.create_experiment(experiment, **kwargs)


def setup_from_config(cfg: Config) -> str:
    return setup_mlflow(cfg.tracking_uri, cfg.artifact_location, cfg.tracking.experiment, cfg.tracking.model_name)


def registered_version(cfg: Config, alias: str) -> Any | None:
    """The ModelVersion behind ``alias`` of ``tracking.model_name``, or None if there is none."""
    import mlflow
    from mlflow.exceptions import MlflowException

    setup_from_config(cfg)
    try:
        return mlflow.MlflowClient().get_model_version_by_alias(cfg.tracking.model_name, alias)
    except MlflowException:
        return None


def resolve_model_uri(cfg: Config, alias: str | None = None) -> tuple[str, str]:
    """``(models:/name/version, version)`` of the model to use: ``scoring.model_version`` if
    set, else the version behind ``alias`` (default ``tracking.alias``, the champion).

    Raises:
        NoModelError: no model is registered yet under that name or alias.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    setup_from_config(cfg)
    client = mlflow.MlflowClient()
    name = cfg.tracking.model_name
    alias = alias or cfg.tracking.alias
    try:
        if cfg.scoring.model_version:
            version = client.get_model_version(name, cfg.scoring.model_version).version
        else:
            version = client.get_model_version_by_alias(name, alias).version
    except MlflowException as e:
        raise NoModelError(
            f"no registered model '{name}' (alias '{alias}' / version "
            f"'{cfg.scoring.model_version or '-'}') in {cfg.tracking_uri}: run `recsys train` first"
        ) from e
    return f"models:/{name}/{version}", str(version)
