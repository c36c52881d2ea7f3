"""spark-submit entry point of the 'suggest' stage: complete a typed prefix into popular queries.

    spark-submit --packages io.delta:delta-spark_4.0_2.13:4.4.0 jobs/suggest.py --config conf/cluster.yaml [key=value ...]

Only parses arguments and runs the stage from the registry (recsys.stages); nothing runs at import.
"""

import sys

from recsys.cli import main as run


def main() -> int:
    return run(stage="suggest")


if __name__ == "__main__":
    sys.exit(main())
