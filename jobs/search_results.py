"""spark-submit entry point of the 'search-results' stage: rank every logged search of a day and write search_results.

    spark-submit --packages io.delta:delta-spark_4.0_2.13:4.4.0 jobs/search_results.py --config conf/cluster.yaml [key=value ...]

Only parses arguments and runs the stage from the registry (recsys.stages); nothing runs at import.
"""

import sys

from recsys.cli import main as run


def main() -> int:
    return run(stage="search-results")


if __name__ == "__main__":
    sys.exit(main())
