"""Feeding ``training_examples`` to torch workers through petastorm.

petastorm is kept behind :class:`ShardedExamples` (a small interface) because it is no
longer maintained upstream; another loader can replace it without touching the train loop.
Known petastorm traps handled here (see ENVIRONMENT.md): the thread reader pool can yield
an empty shard, so the reader pool is ``dummy``; uneven shards hang DDP, so training runs a
fixed number of steps per epoch on an endless reader; petastorm shards by Parquet row
group, so the DataFrame is split into several files before it is materialised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from pyspark.sql import DataFrame, SparkSession

FIXED_COLUMNS = ["input_items", "input_types", "target_items", "target"]


@dataclass
class ShardedExamples:
    """A picklable handle on a materialised example set that each rank reads its shard of."""

    converter: Any  # petastorm.spark.SparkDatasetConverter
    rows: int

    def batches(self, batch_size: int, rank: int, world: int, *, endless: bool, shuffle: bool) -> Iterator[dict]:
        """Yield dicts of (B, L) int64 tensors for this rank's shard.

        The caller must exit the generator (or exhaust it) so petastorm's reader stops.
        """
        import torch

        kwargs: dict[str, Any] = dict(
            batch_size=batch_size,
            num_epochs=None if endless else 1,
            reader_pool_type="dummy",
            workers_count=1,
            shuffling_queue_capacity=4 * batch_size if shuffle else 0,
        )
        if world > 1:
            kwargs.update(cur_shard=rank, shard_count=world)
        with self.converter.make_torch_dataloader(**kwargs) as loader:
            for batch in loader:
                yield {k: torch.as_tensor(v).long() for k, v in batch.items()}

    def delete(self) -> None:
        self.converter.delete()


def materialise(spark: SparkSession, df: DataFrame, cache_dir: str, files: int) -> ShardedExamples:
    """Write ``df`` (the fixed-length example columns) to petastorm's Parquet cache.

    Raises:
        RuntimeError: petastorm is not installed, with the command that installs it.
    """
    try:
        from petastorm.spark import SparkDatasetConverter, make_spark_converter
    except ImportError as e:
        raise RuntimeError(
            "petastorm is not installed: run `make setup` (or `pip install --no-deps petastorm==0.13.1 "
            "dill diskcache future psutil pyzmq`)"
        ) from e
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, cache_dir)
    df = df.select(*FIXED_COLUMNS).repartition(files)
    rows = df.count()
    # Small row groups so every shard gets data even on small tables.
    conv = make_spark_converter(df, parquet_row_group_size_bytes=256 * 1024)
    return ShardedExamples(converter=conv, rows=rows)
