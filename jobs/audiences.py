"""spark-submit entry point of the 'audiences' stage: the users most likely to engage next with items, categories or brands, written to audiences.

    spark-submit --packages io.delta:delta-spark_4.0_2.13:4.4.0 jobs/audiences.py --config conf/cluster.yaml [key=value ...]

Only parses arguments and runs the stage from the registry (recsys.stages); nothing runs at import.
"""

import sys

from recsys.cli import main as run


def main() -> int:
    return run(stage="audiences")


if __name__ == "__main__":
    sys.exit(main())
