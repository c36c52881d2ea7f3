"""spark-submit entry point of the 'compare' stage: print the challenger and the champion side by side.

    spark-submit --packages io.delta:delta-spark_4.0_2.13:4.4.0 jobs/compare.py --config conf/cluster.yaml [key=value ...]

Only parses arguments and runs the stage from the registry (recsys.stages); nothing runs at import.
"""

import sys

from recsys.cli import main as run


def main() -> int:
    return run(stage="compare")


if __name__ == "__main__":
    sys.exit(main())
