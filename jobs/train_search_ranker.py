"""spark-submit entry point of the 'train-search-ranker' stage: train the learned search ranker and register it in MLflow.

    spark-submit --packages io.delta:delta-spark_4.0_2.13:4.4.0 jobs/train_search_ranker.py --config conf/cluster.yaml [key=value ...]

Only parses arguments and runs the stage from the registry (recsys.stages); nothing runs at import.
"""

import sys

from recsys.cli import main as run


def main() -> int:
    return run(stage="train-search-ranker")


if __name__ == "__main__":
    sys.exit(main())
