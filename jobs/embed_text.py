"""spark-submit entry point for the 'embed-text' stage (item_text_embeddings).

    spark-submit --packages io.delta:delta-spark_4.0_2.13:4.4.0 jobs/embed_text.py --config conf/local.yaml [key=value ...]

Only parses arguments and calls recsys; nothing runs at import.
"""

import sys

from recsys.cli import main as run


def main() -> int:
    return run(stage="embed-text")


if __name__ == "__main__":
    sys.exit(main())
