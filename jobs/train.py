"""spark-submit entry point of the 'train' stage: train the sequential recommender with TorchDistributor; log and register it in MLflow.

    spark-submit --packages io.delta:delta-spark_4.0_2.13:4.4.0 jobs/train.py --config conf/cluster.yaml [key=value ...]

Only parses arguments and runs the stage from the registry (recsys.stages); nothing runs at import.
"""

import sys

from recsys.cli import main as run


def main() -> int:
    return run(stage="train")


if __name__ == "__main__":
    sys.exit(main())
