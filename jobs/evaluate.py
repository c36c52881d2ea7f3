"""spark-submit entry point of the 'evaluate' stage: full-catalogue ranking metrics of the model and the baselines on the held-out items.

    spark-submit --packages io.delta:delta-spark_4.0_2.13:4.4.0 jobs/evaluate.py --config conf/cluster.yaml [key=value ...]

Only parses arguments and runs the stage from the registry (recsys.stages); nothing runs at import.
"""

import sys

from recsys.cli import main as run


def main() -> int:
    return run(stage="evaluate")


if __name__ == "__main__":
    sys.exit(main())
