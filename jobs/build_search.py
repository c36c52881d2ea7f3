"""spark-submit entry point of the 'build-search' stage: the searches (with what shoppers did next), query stats and query suggestions.

    spark-submit --packages io.delta:delta-spark_4.0_2.13:4.4.0 jobs/build_search.py --config conf/cluster.yaml [key=value ...]

Only parses arguments and runs the stage from the registry (recsys.stages); nothing runs at import.
"""

import sys

from recsys.cli import main as run


def main() -> int:
    return run(stage="build-search")


if __name__ == "__main__":
    sys.exit(main())
