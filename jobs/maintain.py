"""spark-submit entry point of the 'maintain' stage: OPTIMIZE (Z-ordered) and VACUUM every Delta table, with the sizes before and after.

    spark-submit --packages io.delta:delta-spark_4.0_2.13:4.4.0 jobs/maintain.py --config conf/cluster.yaml [--table NAME] [key=value ...]

Only parses arguments and runs the stage from the registry (recsys.stages); nothing runs at import.
"""

import sys

from recsys.cli import main as run


def main() -> int:
    return run(stage="maintain")


if __name__ == "__main__":
    sys.exit(main())
