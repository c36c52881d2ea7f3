"""spark-submit entry point of the 'report' stage: one self-contained HTML report of the run.

    spark-submit --packages io.delta:delta-spark_4.0_2.13:4.4.0 jobs/report.py --config conf/cluster.yaml [key=value ...]

Only parses arguments and runs the stage from the registry (recsys.stages); nothing runs at import.
"""

import sys

from recsys.cli import main as run


def main() -> int:
    return run(stage="report")


if __name__ == "__main__":
    sys.exit(main())
