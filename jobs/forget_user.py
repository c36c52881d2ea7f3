"""spark-submit entry point of the 'forget-user' stage: erase one user from every table (GDPR article 17).

    spark-submit --packages io.delta:delta-spark_4.0_2.13:4.4.0 jobs/forget_user.py --config conf/cluster.yaml [key=value ...]

Only parses arguments and runs the stage from the registry (recsys.stages); nothing runs at import.
"""

import sys

from recsys.cli import main as run


def main() -> int:
    return run(stage="forget-user")


if __name__ == "__main__":
    sys.exit(main())
