"""spark-submit job of `make cluster-test`: where ``recsys`` is imported from in the driver
and in the executors' Python workers, and which worker ran each task (from its working
folder, <worker work dir>/<app id>/<executor id>). Writes JSON to argv[1]."""

import json
import os
import socket
import sys

from pyspark.sql import SparkSession


def where(_=None):
    import recsys

    cwd = os.getcwd()
    worker = next((p for p in cwd.split(os.sep) if p.startswith("worker")), "driver")
    return {"recsys": recsys.__file__, "python": sys.executable, "host": socket.gethostname(), "pid": os.getpid(),
            "cwd": cwd, "worker": worker}


if __name__ == "__main__":
    spark = SparkSession.builder.appName("recsys-cluster-probe").getOrCreate()
    sc = spark.sparkContext
    executors = sc.parallelize(range(2), 2).barrier().mapPartitions(lambda it: [where()]).collect()
    result = {"driver": where(), "executors": executors, "master": sc.master}
    with open(sys.argv[1], "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    spark.stop()
