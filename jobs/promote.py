"""spark-submit entry point of the 'promote' stage: make the challenger the champion if it beats it (and most-popular) on the test figures.

    spark-submit --packages io.delta:delta-spark_4.0_2.13:4.4.0 jobs/promote.py --config conf/cluster.yaml [key=value ...]

Only parses arguments and runs the stage from the registry (recsys.stages); nothing runs at import.
"""

import sys

from recsys.cli import main as run


def main() -> int:
    return run(stage="promote")


if __name__ == "__main__":
    sys.exit(main())
