"""Entry point for spark-submit: the stream, with master and resources from spark-submit.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master spark://HOST:7077 \\
        cli/stream_job.py --raw /landing --data /data/out --checkpoint /data/ckpt --lateness 10m

Takes the arguments of `longseq stream` (docs/STREAMING.md).
"""

import sys

from longseq.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["stream", "--from-spark-submit", *sys.argv[1:]]))
