"""Storage locations as opaque URI strings (``s3a://``, ``abfss://``, ``gs://``, ``hdfs://``,
``dbfs:/``, ``file:/`` or a plain path), and the few file operations the stages need,
done through Hadoop's FileSystem in the running Spark JVM, so they work wherever Spark
reads and writes. Python's own file calls are used only for locations that are provably
local (a ``file:`` URI, or a plain path when no Spark session is running).
"""

from __future__ import annotations

import os
import pathlib
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# A scheme followed by ":/" (file:/x, file:///x, s3a://b/x, dbfs:/x). Two or more letters, so
# a Windows drive ("C:/") is not taken for one.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:/")


def has_scheme(location: str) -> bool:
    return bool(_SCHEME.match(location))


def normalise(location: str) -> str:
    """A URI unchanged (trailing ``/`` dropped); a plain path made absolute (``~`` expanded).

    Never resolves a URI against the working directory (``s3a://b/x`` stays ``s3a://b/x``)."""
    if has_scheme(location):
        stripped = location.rstrip("/")
        return location if stripped.endswith(":") else stripped  # "file:///" stays the root
    return os.path.abspath(os.path.expanduser(location))


def join(base: str, *parts: str) -> str:
    """``base/part/…`` for a URI or a path, without touching the file system."""
    out = base.rstrip("/") if base not in ("/",) else ""
    for p in parts:
        if p:
            out += "/" + p.strip("/")
    return out


def local_path(location: str) -> str | None:
    """The local path of a ``file:`` URI or a plain path; None for any other scheme."""
    if not has_scheme(location):
        return location
    u = urlparse(location)
    if u.scheme == "file":
        return unquote(u.path)
    return None


def to_url(location: str) -> str:
    """A URL with a scheme (``file://`` for a plain path), for libraries that insist on one."""
    return location if has_scheme(location) else "file://" + os.path.abspath(location)


def for_python(location: str) -> str:
    """The URI Python's libraries (boto3, fsspec, MLflow) use for a Hadoop one: ``s3://`` for
    ``s3a://`` and ``s3n://``; anything else unchanged."""
    for hadoop in ("s3a://", "s3n://"):
        if location.startswith(hadoop):
            return "s3://" + location[len(hadoop):]
    return location


def _spark() -> SparkSession | None:
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()


def _hadoop(spark: SparkSession, location: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(location)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def _use_python(location: str, spark: SparkSession | None) -> str | None:
    """The local path to use Python's file calls on, or None when Hadoop must be used."""
    local = local_path(location)
    if local is None:
        return None
    if has_scheme(location) or spark is None:
        return local
    # A plain path means the cluster's default file system (HDFS on a YARN cluster).
    fs, _ = _hadoop(spark, location)
    return local if fs.getUri().getScheme() == "file" else None


def exists(location: str, spark: SparkSession | None = None) -> bool:
    spark = spark or _spark()
    local = _use_python(location, spark)
    if local is not None:
        return os.path.exists(local)
    fs, path = _hadoop(spark, location)
    return bool(fs.exists(path))


def is_delta_table(location: str, spark: SparkSession | None = None) -> bool:
    """True when ``location`` holds a Delta table (its ``_delta_log`` exists)."""
    return exists(join(location, "_delta_log"), spark)


def delete(location: str, spark: SparkSession | None = None) -> bool:
    """Delete a file or a folder tree; False when there was nothing to delete."""
    spark = spark or _spark()
    local = _use_python(location, spark)
    if local is not None:
        import shutil

        if os.path.isdir(local):
            shutil.rmtree(local)
            return True
        if os.path.exists(local):
            os.remove(local)
            return True
        return False
    fs, path = _hadoop(spark, location)
    return bool(fs.delete(path, True))


@dataclass(frozen=True)
class FileInfo:
    uri: str  # as Hadoop names it (file:/…, s3a://…)
    size: int
    mtime_ms: int

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]


def list_files(location: str, spark: SparkSession | None = None) -> list[FileInfo]:
    """Files under ``location`` (recursively), sorted by URI; names or folders starting with
    ``.`` or ``_`` (hidden, temporary, ``_SUCCESS``) are skipped. Empty when it does not exist."""
    spark = spark or _spark()
    if spark is None:
        raise RuntimeError("listing files needs a SparkSession")  # a bug: callers start Spark first
    fs, path = _hadoop(spark, location)
    if not fs.exists(path):
        return []
    base = fs.makeQualified(path).toString().rstrip("/")
    out = []
    it = fs.listFiles(path, True)
    while it.hasNext():
        st = it.next()
        uri = st.getPath().toString()
        rel = uri[len(base):].strip("/") if uri.startswith(base) else st.getPath().getName()
        if any(part.startswith((".", "_")) for part in rel.split("/")):
            continue
        out.append(FileInfo(uri, int(st.getLen()), int(st.getModificationTime())))
    return sorted(out, key=lambda f: f.uri)


def read_bytes(location: str, spark: SparkSession | None = None) -> bytes:
    spark = spark or _spark()
    local = _use_python(location, spark)
    if local is not None:
        with open(local, "rb") as fh:
            return fh.read()
    row = spark.read.format("binaryFile").load(location).select("content").first()
    return bytes(row[0]) if row is not None else b""


def write_text(location: str, text: str, spark: SparkSession | None = None) -> None:
    """Create or replace the file at ``location`` with ``text`` (UTF-8)."""
    spark = spark or _spark()
    local = _use_python(location, spark)
    if local is not None:
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        with open(local, "w", encoding="utf-8") as fh:
            fh.write(text)
        return
    fs, path = _hadoop(spark, location)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def read_text(location: str, spark: SparkSession | None = None) -> str:
    return read_bytes(location, spark).decode("utf-8")


def copy_from_local(local_dir: str, location: str, spark: SparkSession | None = None) -> None:
    """Copy the local folder ``local_dir``'s contents into ``location`` (replacing files)."""
    spark = spark or _spark()
    fs, _ = _hadoop(spark, location)
    hadoop_path = spark.sparkContext._jvm.org.apache.hadoop.fs.Path
    # Streamed through the destination's create() (Hadoop's FileUtil.copy), not S3A's own
    # copyFromLocalFile: that one fails on a folder given as a plain path ("Cannot get relative
    # path for URI", Hadoop 3.4) and its uploads wait on "Expect: 100-continue", which some
    # S3-compatible servers answer wrongly.
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    local_fs = jvm.org.apache.hadoop.fs.FileSystem.getLocal(conf)
    for name in sorted(os.listdir(local_dir)):
        src = hadoop_path(pathlib.Path(local_dir, name).resolve().as_uri())
        # deleteSource=False, overwrite=True; folders recursively
        jvm.org.apache.hadoop.fs.FileUtil.copy(local_fs, src, fs, hadoop_path(join(location, name)), False, True, conf)


@contextmanager
def local_folder(location: str, spark: SparkSession | None = None) -> Iterator[str]:
    """A local folder to write into that ends up at ``location``: the folder itself when it is
    local, else a temporary folder copied there on success."""
    spark = spark or _spark()
    local = _use_python(location, spark)
    if local is not None:
        os.makedirs(local, exist_ok=True)
        yield local
        return
    with tempfile.TemporaryDirectory(prefix="recsys-stage-") as tmp:
        yield tmp
        copy_from_local(tmp, location, spark)
