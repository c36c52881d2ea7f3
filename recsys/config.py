"""Typed, layered configuration.

Layers, later wins: ``conf/base.yaml`` → an environment overlay (``conf/local.yaml``,
``conf/cluster.yaml`` …) → ``key=value`` overrides from the command line
(``train.epochs=3``). Every key must exist in the dataclasses below: an unknown key or a
value of the wrong type raises :class:`ConfigError` naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from recsys import storage


from recsys.errors import ConfigError  # noqa: F401  (re-exported: raised by every check below)


class Env(str, enum.Enum):
    LOCAL = "local"
    CLUSTER = "cluster"
    DATABRICKS = "databricks"


@dataclass(frozen=True)
class LakehouseConfig:
    """Where the lakehouse lives: any location Spark can write (``s3a://bucket/lake``,
    ``abfss://…``, ``gs://…``, ``hdfs://…``, ``dbfs:/…``, ``file:///…``) or a local folder.

    Locations are opaque URI strings (``*_uri``); only a plain path is made absolute. The
    ``*_path`` properties are conveniences for local lakehouses (tests, the demo) and raise
    :class:`ConfigError` for any other."""

    root: str = "lakehouse"
    landing: str = ""  # raw files; default <root>/landing
    # Both set: every table is also registered as catalog.schema.<table name> (an external
    # table at its location, see recsys.tables) and read by that name; "" = by location only.
    catalog: str = ""
    schema: str = ""

    def __post_init__(self) -> None:
        if not self.root.strip():
            raise ConfigError("lakehouse.root must not be empty")
        if bool(self.catalog) != bool(self.schema):
            raise ConfigError("lakehouse.catalog and lakehouse.schema go together: set both (e.g. "
                              "lakehouse.catalog=spark_catalog lakehouse.schema=recsys) or neither, got "
                              f"catalog={self.catalog!r} schema={self.schema!r}")
        for key in ("catalog", "schema"):
            value = getattr(self, key)
            if value and not _IDENTIFIER.match(value):
                raise ConfigError(f"config key 'lakehouse.{key}': {value!r} is not a catalog identifier "
                                  "(letters, digits, _ and -)")

    @property
    def root_uri(self) -> str:
        return storage.normalise(self.root)

    @property
    def landing_uri(self) -> str:
        return storage.normalise(self.landing) if self.landing else storage.join(self.root_uri, "landing")

    @property
    def reports_uri(self) -> str:
        return storage.join(self.root_uri, "_reports")

    def uri(self, relative: str) -> str:
        """``relative`` under the root (an absolute path or a URI is kept as it is)."""
        if storage.has_scheme(relative) or relative.startswith("/"):
            return relative
        return storage.join(self.root_uri, relative)

    @property
    def root_path(self) -> Path:
        return _local(self.root_uri, "lakehouse.root")

    @property
    def landing_path(self) -> Path:
        return _local(self.landing_uri, "lakehouse.landing")

    @property
    def reports_path(self) -> Path:
        return _local(self.reports_uri, "lakehouse.root")


_IDENTIFIER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


def _local(uri: str, key: str) -> Path:
    path = storage.local_path(uri)
    if path is None:
        raise ConfigError(f"config key '{key}': {uri} is not a local folder (this needs one)")
    return Path(path)


# HotSpot compiles a method with its optimising compiler (C2) once it has run 5,000 times or
# looped 40,000 times. A pipeline of a few hundred Spark queries, each with its own generated
# classes, makes C2 compile tens of thousands of methods that then run a few more times: on two
# cores a full build of 5M events spent 86 s of 389 s of CPU in the JIT compilers, and an
# incremental run as much CPU compiling as running tasks. Ten times the thresholds leave C2 the
# really hot loops: in a pair of runs JIT CPU fell to 59 s and the full build on local[2] from
# 204 s to 190 s. bench/pipeline.py reports the JVM's CPU by thread kind.
JIT_OPTIONS = ("-XX:Tier4InvocationThreshold=50000 -XX:Tier4MinInvocationThreshold=6000 "
               "-XX:Tier4CompileThreshold=150000 -XX:Tier4BackEdgeThreshold=400000")


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[2]"
    app_name: str = "recsys"
    shuffle_partitions: int = 4
    driver_memory: str = "4g"
    resolve_delta_jars: bool = True  # add Delta through spark.jars.packages (off where the cluster has it)
    # JVM options for the driver and the executors (JIT_OPTIONS above by default); "" for none.
    jvm_options: str = JIT_OPTIONS
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.shuffle_partitions < 1:
            raise ConfigError("spark.shuffle_partitions must be >= 1")


@dataclass(frozen=True)
class TablesConfig:
    events: str = "bronze/events"
    catalog: str = "bronze/catalog"
    users: str = "bronze/users"
    quarantine: str = "bronze/quarantine"
    user_profiles: str = "gold/user_profiles"
    item_profiles: str = "gold/item_profiles"
    item_daily_counts: str = "gold/item_daily_counts"
    training_examples: str = "gold/training_examples"
    item_text_embeddings: str = "gold/item_text_embeddings"
    recommendations: str = "gold/recommendations"
    searches: str = "gold/searches"
    query_stats: str = "gold/query_stats"
    query_suggestions: str = "gold/query_suggestions"
    search_results: str = "gold/search_results"
    audiences: str = "gold/audiences"
    forget_audit: str = "audit/forget_audit"  # pseudonyms of forgotten users; ingest drops their rows


@dataclass(frozen=True)
class GeneratorConfig:
    users: int = 2000
    items: int = 600
    days: int = 30
    seed: int = 7
    malformed_rate: float = 0.01

    def __post_init__(self) -> None:
        if self.users < 1 or self.items < 10 or self.days < 1:
            raise ConfigError("generator.users >= 1, generator.items >= 10 and generator.days >= 1 are required")
        if not 0.0 <= self.malformed_rate < 0.5:
            raise ConfigError("generator.malformed_rate must be in [0, 0.5)")


@dataclass(frozen=True)
class IngestConfig:
    full_refresh: bool = False  # true: forget what was ingested and read every landing file again
    max_id_length: int = 256  # longer event/user/session/item ids are quarantined as id_too_long

    def __post_init__(self) -> None:
        if self.max_id_length < 1:
            raise ConfigError(f"ingest.max_id_length must be >= 1, got {self.max_id_length}")


@dataclass(frozen=True)
class FeaturesConfig:
    max_seq_len: int = 50
    min_interactions: int = 3  # users with fewer distinct interactions cannot be split train/valid/test
    price_buckets: int = 10
    text_embeddings: bool = True  # build item_text_embeddings with a sentence encoder
    text_model: str = ""  # a sentence-transformers model path; "" = the bundled all-MiniLM-L6-v2
    text_batch_size: int = 64
    full_rebuild: bool = False  # true: rebuild every gold table instead of MERGEing what changed
    # Deletion vectors on user_profiles and training_examples (cheaper MERGEs); false for
    # readers without them (delta-rs: DuckDB, Polars). Set before the tables are first built.
    deletion_vectors: bool = True
    # Share of users whose second-to-last step is the validation target; for the others it is
    # one more training target (1.0 = every user validates, the classic split).
    validation_share: float = 0.2

    def __post_init__(self) -> None:
        if self.max_seq_len < 2:
            raise ConfigError("features.max_seq_len must be >= 2")
        if not 0.0 < self.validation_share <= 1.0:
            raise ConfigError(f"features.validation_share must be in (0, 1], got {self.validation_share}")
        if self.min_interactions < 3:
            raise ConfigError("features.min_interactions must be >= 3 (train, validation and test need one item each)")
        if self.price_buckets < 1:
            raise ConfigError("features.price_buckets must be >= 1")


class ModelFamily(str, enum.Enum):
    SASREC = "sasrec"  # causal transformer with side features (recsys.models.sasrec)


@dataclass(frozen=True)
class ModelConfig:
    family: ModelFamily = ModelFamily.SASREC  # which network recsys.models.build_model builds
    hidden: int = 128
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.5
    item_dropout: float = 0.2  # training only: share of history steps whose item vector is blanked
    side_features: bool = True
    text_features: bool = True  # add the projected item text embedding when item_text_embeddings exists

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ConfigError("model.hidden must be divisible by model.heads")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("model.dropout must be in [0, 1)")
        if not 0.0 <= self.item_dropout < 1.0:
            raise ConfigError(f"model.item_dropout must be in [0, 1), got {self.item_dropout}")


class Backend(str, enum.Enum):
    AUTO = "auto"
    GLOO = "gloo"
    NCCL = "nccl"


class NegativeSampler(str, enum.Enum):
    UNIFORM = "uniform"  # K items drawn uniformly from the catalogue
    MIXED = "mixed"  # K uniform items plus the batch's own targets, log-Q corrected


class Precision(str, enum.Enum):
    AUTO = "auto"  # bf16 autocast on GPUs that support it, fp32 elsewhere (the CPU)
    FP32 = "fp32"
    BF16 = "bf16"  # bf16 autocast on the GPU (the CPU stays fp32)


class WarmStart(str, enum.Enum):
    NONE = ""  # random initial weights
    CHAMPION = "champion"  # the serving model's weights; new items, categories and brands get fresh rows


@dataclass(frozen=True)
class TrainConfig:
    num_processes: int = 2
    local_mode: bool = False
    use_gpu: bool = False
    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50
    patience: int = 5  # epochs without validation NDCG@10 improvement before stopping
    seed: int = 42
    torch_threads: int = 1
    # The loss: the exact full-catalogue softmax for catalogues of up to full_softmax_max_items
    # items; above that, a sampled softmax over num_negatives items (0 = always the full softmax).
    full_softmax_max_items: int = 16384
    num_negatives: int = 2048
    negative_sampler: NegativeSampler = NegativeSampler.MIXED  # uniform | mixed (uniform + in-batch, log-Q corrected)
    length_buckets: int = 32  # batches pooled, sorted by length and cut to their longest sequence; 0 = off
    ema_decay: float = 0.0  # > 0: validate and keep an exponential moving average of the weights; 0 = off
    # A share of the training targets drawn from the next future_window steps instead of being
    # the next step (which stays one of them). Off by default: on the fixed protocol 0.5 gave
    # Yelp +7% NDCG@10 and cost Beauty 9% (bench/RESULTS.md, issue #25).
    future_share: float = 0.0
    future_window: int = 5
    # true: the loss ranks what a position has not seen yet, as the headline evaluation
    # protocol does (its input items are no candidates, a repeated target is left out). Off by
    # default: on Yelp it over-fitted sooner and lost 7% NDCG@10 (bench/RESULTS.md).
    mask_history: bool = False
    max_minutes: float = 30.0  # training time budget: ends mid-epoch, after a last validation (best epoch kept); 0 = no limit
    # true: after every epoch the learning-rate schedule is refitted to the steps the time left
    # allows at the pace so far, so a run the budget cuts short still ends its decay. Off by
    # default: it makes the run depend on the machine's speed, and on a budget-bound Sports run
    # it lost 4.5% NDCG@10 (bench/RESULTS.md, issue #25).
    fit_schedule_to_budget: bool = False
    precision: Precision = Precision.AUTO
    # Where rank 0 writes a checkpoint after every epoch (one folder per MLflow run): any
    # location every training process can open; "" = <lakehouse root>/_checkpoints.
    checkpoint_dir: str = ""
    # petastorm's cache: the training examples materialised as Parquet for the training
    # processes, deleted after training. "" = <lakehouse root>/_petastorm. It must be a file:/
    # or hdfs:// location (petastorm 0.13 reads no object store with pyarrow 14), so it must be
    # set when the root is in object storage: a folder every training process reaches.
    cache_dir: str = ""
    resume: bool = False  # continue the newest interrupted (running or failed) run from its checkpoint
    resume_run_id: str = ""  # ... or this run (also `recsys train --resume RUN_ID`)
    warm_start: WarmStart = WarmStart.NONE

    def __post_init__(self) -> None:
        if self.max_minutes < 0:
            raise ConfigError("train.max_minutes must be >= 0 (0 = no limit)")
        if self.length_buckets < 0:
            raise ConfigError("train.length_buckets must be >= 0 (0 = off)")
        if not 0.0 <= self.future_share <= 1.0:
            raise ConfigError(f"train.future_share must be in [0, 1], got {self.future_share}")
        if self.future_window < 1:
            raise ConfigError(f"train.future_window must be >= 1, got {self.future_window}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in [0, 1) (0 = off), got {self.ema_decay}")
        if self.num_negatives < 0:
            raise ConfigError("train.num_negatives must be >= 0 (0 = full softmax)")
        if self.full_softmax_max_items < 0:
            raise ConfigError("train.full_softmax_max_items must be >= 0 (0 = sampled softmax for any catalogue)")
        if self.num_processes < 1:
            raise ConfigError("train.num_processes must be >= 1")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("train.epochs and train.batch_size must be >= 1")
        if self.batch_size % self.num_processes:
            raise ConfigError(f"train.batch_size is the global batch: it must be a multiple of train.num_processes "
                              f"({self.num_processes}), got {self.batch_size}")
        if self.lr <= 0:
            raise ConfigError("train.lr must be > 0")


@dataclass(frozen=True)
class TrackingConfig:
    tracking_uri: str = ""  # default sqlite:///<root>/_mlflow/mlflow.db
    artifact_location: str = ""  # default <root>/_mlflow/artifacts
    experiment: str = "recsys"
    model_name: str = "recsys-sasrec"
    alias: str = "champion"  # the version that serves: batch scoring and the served model use it
    challenger_alias: str = "challenger"  # training's new version; `recsys promote` decides if it serves

    def __post_init__(self) -> None:
        if not self.alias or not self.challenger_alias or self.alias == self.challenger_alias:
            raise ConfigError("tracking.alias and tracking.challenger_alias must be set and differ, got "
                              f"{self.alias!r} and {self.challenger_alias!r}")


@dataclass(frozen=True)
class PromotionConfig:
    """When ``recsys promote`` moves the champion alias to the challenger (see recsys.promotion)."""

    # The challenger's test NDCG@10 may be this much below the champion's, measured on the
    # same rows in the same pass, and still be promoted (a retrained model on fresh data
    # should not lose to yesterday's by noise alone).
    tolerance: float = 0.001
    force: bool = False  # promote whatever the figures say (also `recsys promote --force`)

    def __post_init__(self) -> None:
        if self.tolerance < 0:
            raise ConfigError(f"promotion.tolerance must be >= 0, got {self.tolerance}")


class Exclude(str, enum.Enum):
    PURCHASED = "purchased"
    INTERACTED = "interacted"


@dataclass(frozen=True)
class ScoringConfig:
    top_k: int = 10
    exclude: Exclude = Exclude.PURCHASED  # items never recommended back: bought ones, or every one seen
    batch_size: int = 512
    run_date: str = ""  # default: today (UTC)
    model_version: str = ""  # default: the version behind tracking.alias
    # Business rules, applied as masks in scoring (recsys.scoring.ranking).
    in_stock_only: bool = True  # never recommend an item the catalogue marks out of stock
    max_per_brand: int = 0  # at most this many items of one brand in a user's top-K (0 = no limit)
    allow_categories: list[str] = field(default_factory=list)  # only these category paths (and below); [] = all
    deny_categories: list[str] = field(default_factory=list)  # never these category paths (and below)
    fill: bool = True  # fewer than top_k left: fill with popular items of the user's categories, then the shop's
    block_items: int = 8192  # items per block of the score matrix (memory: batch_size x this x 4 bytes)

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError("scoring.top_k must be >= 1")
        for key in ("max_per_brand",):
            if getattr(self, key) < 0:
                raise ConfigError(f"scoring.{key} must be >= 0, got {getattr(self, key)}")
        for key in ("batch_size", "block_items"):
            if getattr(self, key) < 1:
                raise ConfigError(f"scoring.{key} must be >= 1, got {getattr(self, key)}")


@dataclass(frozen=True)
class AudiencesConfig:
    """Marketing audiences (recsys.scoring.audience_job): the users most likely to engage next
    with an item, a category or a brand."""

    size: int = 100  # users per audience
    targets: list[str] = field(default_factory=list)  # "item:<item_id>", "category:<path>", "brand:<name>"
    # With no targets: the audiences of the most popular items and the largest top-level categories.
    auto_items: int = 5
    auto_categories: int = 3
    exclude_buyers: bool = True  # an item's audience leaves out the users who already bought it
    batch_size: int = 512  # users per batch
    eval_min_buyers: int = 3  # evaluation: targets with at least this many held-out buyers

    def __post_init__(self) -> None:
        for key in ("size", "batch_size", "eval_min_buyers"):
            if getattr(self, key) < 1:
                raise ConfigError(f"audiences.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("auto_items", "auto_categories"):
            if getattr(self, key) < 0:
                raise ConfigError(f"audiences.{key} must be >= 0, got {getattr(self, key)}")
        for t in self.targets:
            kind = str(t).split(":", 1)[0]
            if kind not in TARGET_TYPES or ":" not in str(t) or not str(t).split(":", 1)[1].strip():
                raise ConfigError(f"audiences.targets: {t!r} is not one of "
                                  + ", ".join(f"'{k}:<{'item_id' if k == 'item' else 'path' if k == 'category' else 'name'}>'"
                                              for k in TARGET_TYPES))


TARGET_TYPES = ("item", "category", "brand")


@dataclass(frozen=True)
class SearchConfig:
    """Search and query suggestions (recsys.search)."""

    candidates: int = 200  # candidates per query from each retriever (BM25, embeddings) before ranking
    top_k: int = 10
    max_prefix_len: int = 8  # query_suggestions holds prefixes of 1..this many characters
    suggestions: int = 30  # completions kept per prefix (the top_k shown are re-ranked from these)
    suggest_min_users: int = 2  # a query is suggested only once this many distinct users typed it
    half_life_days: float = 7.0  # recency weight of a logged search: 0.5 ** (age in days / this)
    holdout_days: int = 3  # the ranker validates on the searches of the last days; trains on the rest
    ranker_model_name: str = "recsys-search-ranker"  # registered next to tracking.model_name, same aliases
    personalise: bool = True  # user features in the ranker and the suggestions
    run_date: str = ""  # search-results: the day whose logged searches are ranked ("" = the newest)
    full_rebuild: bool = False  # true: rebuild the search tables in full (default: only sessions that changed)

    def __post_init__(self) -> None:
        for key in ("candidates", "top_k", "max_prefix_len", "suggestions", "suggest_min_users"):
            if getattr(self, key) < 1:
                raise ConfigError(f"search.{key} must be >= 1, got {getattr(self, key)}")
        if self.half_life_days <= 0:
            raise ConfigError(f"search.half_life_days must be > 0, got {self.half_life_days}")
        if self.holdout_days < 0:
            raise ConfigError(f"search.holdout_days must be >= 0, got {self.holdout_days}")
        if self.run_date:
            try:
                datetime.date.fromisoformat(self.run_date)
            except ValueError:
                raise ConfigError(f"search.run_date must be a date YYYY-MM-DD, got {self.run_date!r}") from None


class Baseline(str, enum.Enum):
    POPULARITY = "popularity"
    COOCCURRENCE = "cooccurrence"
    ALS = "als"


class EvaluationProtocol(str, enum.Enum):
    # Every history item is excluded from the ranking; a test item the user already had is a
    # miss. The mask depends on the history only. The protocol published results use, and
    # the one early stopping selects on whatever this key says.
    HISTORY_MASKED = "history_masked"
    UNMASKED = "unmasked"  # nothing excluded: repeats compete with the rest (reported apart)


@dataclass(frozen=True)
class EvaluationConfig:
    protocol: EvaluationProtocol = EvaluationProtocol.HISTORY_MASKED
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    batch_size: int = 512
    baselines: list[Baseline] = field(default_factory=lambda: [Baseline.POPULARITY])
    als_rank: int = 64
    als_max_iter: int = 15
    als_reg_param: float = 0.05
    als_alpha: float = 10.0


@dataclass(frozen=True)
class PrivacyConfig:
    pseudonymise: bool = True  # replace user ids by HMAC-SHA256(key, id) at ingestion
    key_env: str = "RECSYS_PSEUDONYM_KEY"  # environment variable holding the key
    key_file: str = ""  # or a secret file holding it (wins over the variable)
    user: str = ""  # the raw user id for forget-user
    vacuum_after_forget: bool = False  # VACUUM RETAIN 0 HOURS after forget-user (no time travel back)


# Delta's own default retention (delta.deletedFileRetentionDuration): VACUUM refuses a shorter
# one unless its safety check is turned off.
DELTA_RETENTION_HOURS = 168


@dataclass(frozen=True)
class MaintenanceConfig:
    """``recsys maintain`` (recsys.maintain): OPTIMIZE, then VACUUM, every Delta table."""

    # VACUUM deletes the files no version of the last retain_hours needs (time travel, and
    # readers or writers still running, need them). Below 168 (Delta's 7 days) maintain turns
    # Delta's retention check off for its own VACUUM: only while no job writes the tables.
    retain_hours: int = DELTA_RETENTION_HOURS
    zorder: bool = True  # OPTIMIZE ... ZORDER BY the keys the jobs read by; false: compaction only

    def __post_init__(self) -> None:
        if self.retain_hours < 0:
            raise ConfigError(f"maintenance.retain_hours must be >= 0 (Delta's default: {DELTA_RETENTION_HOURS}), "
                              f"got {self.retain_hours}")


@dataclass(frozen=True)
class Config:
    env: Env = Env.LOCAL
    lakehouse: LakehouseConfig = field(default_factory=LakehouseConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    tables: TablesConfig = field(default_factory=TablesConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    promotion: PromotionConfig = field(default_factory=PromotionConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    audiences: AudiencesConfig = field(default_factory=AudiencesConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)

    # --- derived locations -------------------------------------------------------------
    def table_path(self, name: str) -> str:
        """Location (URI or absolute path) of the Delta table called ``name`` (a field of TablesConfig)."""
        return self.lakehouse.uri(getattr(self.tables, name))

    def table_name(self, name: str) -> str:
        """The catalog name ``catalog.schema.name`` (quoted) of the table ``name`` when
        ``lakehouse.catalog`` is set, else ""."""
        getattr(self.tables, name)  # an unknown table is an AttributeError, as in table_path
        lh = self.lakehouse
        return f"`{lh.catalog}`.`{lh.schema}`.`{name}`" if lh.catalog else ""

    @property
    def tracking_uri(self) -> str:
        """``tracking.tracking_uri``, else a SQLite store under a local lakehouse root.

        Raises:
            ConfigError: the root is not local and no tracking URI is configured."""
        if self.tracking.tracking_uri:
            return self.tracking.tracking_uri
        local = storage.local_path(self.lakehouse.root_uri)
        if local is None:
            raise ConfigError(f"config key 'tracking.tracking_uri' must be set when lakehouse.root is not a local "
                              f"folder ({self.lakehouse.root_uri}): an MLflow server, 'databricks', or sqlite:///<file>")
        return f"sqlite:///{local}/_mlflow/mlflow.db"

    @property
    def artifact_location(self) -> str:
        """Where MLflow stores a new experiment's artifacts, as MLflow names it (``s3://`` for
        Hadoop's ``s3a://``: MLflow writes through boto3)."""
        return storage.for_python(self.tracking.artifact_location
                                  or storage.join(self.lakehouse.root_uri, "_mlflow", "artifacts"))

    @property
    def petastorm_cache_uri(self) -> str:
        """``train.cache_dir`` (default ``<root>/_petastorm``) as the URL petastorm reads.

        Raises:
            ConfigError: it is in object storage, which petastorm cannot read here."""
        location = self.train.cache_dir or storage.join(self.lakehouse.root_uri, "_petastorm")
        url = storage.to_url(location)
        if url.startswith("dbfs:/"):  # Databricks' FUSE mount
            url = "file:///dbfs/" + url[len("dbfs:/"):].lstrip("/")
        if url.split(":", 1)[0] not in ("file", "hdfs"):
            where = (f"train.cache_dir is {location}" if self.train.cache_dir
                     else f"lakehouse.root is {self.lakehouse.root_uri}")
            raise ConfigError(f"config key 'train.cache_dir' must be a file:/ or hdfs:// folder every training process "
                              f"reaches (file:///shared/..., hdfs://..., /dbfs/... on Databricks), because {where}: "
                              "petastorm reads the materialised training examples with pyarrow, which reads no "
                              "object store here")
        return url

    def to_flat_dict(self) -> dict[str, Any]:
        """``{"train.epochs": 20, …}``: the resolved config, as logged to MLflow."""
        return _flatten(to_dict(self))


# --- loading -------------------------------------------------------------------------------

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted where lossless."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = [m.value for m in tp]
        if value not in allowed:
            raise ConfigError(f"config key '{key}': {value!r} is not allowed; allowed values: {', '.join(map(str, allowed))}")
        return tp(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if value is None:
            return ""
        if isinstance(value, (datetime.date, datetime.datetime)):  # YAML reads 2026-11-01 as a date
            return value.isoformat()
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return str(value)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        # YAML's true/false are Spark's and Hadoop's "true"/"false", not Python's "True"
        return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
    raise ConfigError(f"config key '{key}': unsupported type {tp}")  # a bug in this module


def _build(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<root>'}': expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; allowed keys here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value or {}, key + ".")
        else:
            kwargs[name] = _coerce(key, value, tp)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config section '{prefix.rstrip('.')}': {e}") from e


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def parse_override(text: str) -> dict[str, Any]:
    """``"train.epochs=3"`` → ``{"train": {"epochs": 3}}`` (the value is read as YAML);
    ``"spark.extra.spark.ui.port=4050"`` → ``{"spark": {"extra": {"spark.ui.port": 4050}}}``."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. train.epochs=3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node: dict[str, Any] = {}
    cur = node
    parts = key.split(".")
    if parts[:2] == ["spark", "extra"] and len(parts) > 3:  # a Spark key is one name: spark.hadoop.fs.…
        parts = parts[:2] + [".".join(parts[2:])]
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return node


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load ``conf/base.yaml``, then ``path`` (an overlay), then ``key=value`` overrides.

    Raises:
        ConfigError: a file is missing or unreadable, or a key is unknown or mistyped.
    """
    data = _read_yaml(CONF_DIR / "base.yaml") if (CONF_DIR / "base.yaml").is_file() else {}
    if path is not None:
        p = Path(path)
        if p.resolve() != (CONF_DIR / "base.yaml").resolve():
            data = _merge(data, _read_yaml(p))
    for o in overrides:
        data = _merge(data, parse_override(o))
    return _build(Config, data)


def replace(cfg: Config, *overrides: str) -> Config:
    """A copy of ``cfg`` with ``key=value`` overrides applied (checked like any other)."""
    return _build(Config, _merge(to_dict(cfg), _merged_overrides(overrides)))


def _merged_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for o in overrides:
        out = _merge(out, parse_override(o))
    return out
