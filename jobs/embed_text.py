"""spark-submit entry point of the 'embed-text' stage: item text embeddings from the pretrained sentence encoder (new or changed items only).

    spark-submit --packages io.delta:delta-spark_4.0_2.13:4.4.0 jobs/embed_text.py --config conf/cluster.yaml [key=value ...]

Only parses arguments and runs the stage from the registry (recsys.stages); nothing runs at import.
"""

import sys

from recsys.cli import main as run


def main() -> int:
    return run(stage="embed-text")


if __name__ == "__main__":
    sys.exit(main())
