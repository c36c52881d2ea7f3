"""spark-submit entry point for the 'forget-user' stage.

    spark-submit --packages io.delta:delta-spark_4.0_2.13:4.4.0 jobs/forget_user.py --config conf/local.yaml [key=value ...]

Only parses arguments and calls recsys; nothing runs at import.
"""

import sys

from recsys.cli import main as run


def main() -> int:
    return run(stage="forget-user")


if __name__ == "__main__":
    sys.exit(main())
