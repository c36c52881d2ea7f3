"""Feeding ``training_examples`` to torch workers through petastorm.

petastorm is kept behind :class:`ShardedExamples` (a small interface) because it is no
longer maintained upstream; another loader can replace it without touching the train loop.
Known petastorm traps handled here (see ENVIRONMENT.md): the thread reader pool can yield
an empty shard, so the reader pool is ``dummy``; uneven shards hang DDP, so training runs a
fixed number of steps per epoch on an endless reader; petastorm shards by Parquet row
group, so the DataFrame is split into several files before it is materialised.

Reproducible for a given seed and world size, wherever the ranks run (one machine's
``local[2]`` or executors of a cluster): each row's file comes from a hash of its key and the
rows of a file are sorted by it, so the cache's contents do not depend on how the table's files
were laid out or listed; the files are read in name order; petastorm's row-group order comes
from the seed, and its shuffling buffer (which draws from NumPy's global generator) is seeded
per rank.
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

    def batches(self, batch_size: int, rank: int, world: int, *, endless: bool, shuffle: bool,
                seed: int = 0) -> Iterator[dict]:
        """Yield dicts of (B, L) int64 tensors for this rank's shard, the same ones in the same
        order for the same ``seed`` (the same on every rank: petastorm shards row groups by it).

        The caller must exit the generator (or exhaust it) so petastorm's reader stops.
        """
        import numpy as np
        import torch

        kwargs: dict[str, Any] = dict(
            batch_size=batch_size,
            num_epochs=None if endless else 1,
            reader_pool_type="dummy",
            workers_count=1,
            shuffling_queue_capacity=4 * batch_size if shuffle else 0,
            # Row-group order and sharding; petastorm takes 0 for "no seed" (NumPy's global
            # generator, drawn from in the ventilator's thread).
            seed=seed % 2_147_483_646 + 1,
        )
        if shuffle:  # petastorm's shuffling buffer draws from NumPy's global generator
            np.random.seed((seed * 1_000_003 + rank) % 2**32)
        if world > 1:
            kwargs.update(cur_shard=rank, shard_count=world)
        with self.converter.make_torch_dataloader(**kwargs) as loader:
            for batch in loader:
                yield {k: torch.as_tensor(v).long() for k, v in batch.items()}

    def delete(self) -> None:
        self.converter.delete()


def materialise(spark: SparkSession, df: DataFrame, cache_dir: str, files: int, key: str = "user_id") -> ShardedExamples:
    """Write ``df`` (the fixed-length example columns, one row per ``key``) to petastorm's
    Parquet cache: ``files`` files by a hash of ``key``, each sorted by it.

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
    df = df.repartition(files, key).sortWithinPartitions(key).select(*FIXED_COLUMNS)
    rows = df.count()
    # Small row groups so every shard gets data even on small tables.
    conv = make_spark_converter(df, parquet_row_group_size_bytes=256 * 1024)
    # petastorm reads the files in this list's order, which comes from Spark's inputFiles() (a
    # hash set): sorted, the row groups' order (and so each rank's shard) is the same every run.
    conv.file_urls = sorted(conv.file_urls)
    return ShardedExamples(converter=conv, rows=rows)
