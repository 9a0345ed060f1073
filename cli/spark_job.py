"""Entry point for spark-submit: the build, with master and resources from spark-submit.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[*]' \\
        cli/spark_job.py --raw data/raw --data data/out --start 2026-01-01 --end 2026-01-14

Takes the arguments of `longseq build` (docs/ETL.md has a cluster example).
"""

import sys

from longseq.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["build", "--engine", "spark", "--from-spark-submit", *sys.argv[1:]]))
