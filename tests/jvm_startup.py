"""Quicker JVM starts for the test suite: the same Spark, started faster.

The suite starts about fifty JVMs (the session's Spark, and every `longseq build`, stream,
validate, spark-submit, Airflow task and standalone daemon it runs as a child process). On
two cores a JVM spends most of its first seconds loading and verifying Spark's ~10k classes
and compiling them with the optimizing JIT, which a test's small data never repays:
startup and a first query took about 9.8 s, and 3.7 s with the options below.

- A class-data-sharing archive (JDK AppCDS, `-XX:SharedArchiveFile`) of the classes a
  small Spark build loads, dumped once by a real `longseq build --engine spark` and kept
  in the pytest cache, keyed by the Java and pyspark versions. A JVM whose class path does
  not match it ignores it and loads classes as usual (-Xshare:auto, the default).
- The client JIT only (`-XX:TieredStopAtLevel=1`) in the child processes, each of which
  runs one short job: compiled sooner, at less cost. Not in the tests' own session, which
  runs hundreds of queries: there the optimizing JIT repays itself (its builds took about
  a quarter longer without it).

They go in SPARK_SUBMIT_OPTS (the driver JVM of every spark-submit, pyspark's included)
and SPARK_DAEMON_JAVA_OPTS (a standalone master and worker). The product never sets them:
a user's long job wants the optimizing JIT, and what a JVM computes does not depend on
either.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyspark

from longseq.etl.spark_session import java_executable
from longseq.schemas.errors import LongseqError

QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"  # a mismatched archive is ignored without a word on stdout
JIT = "-XX:TieredStopAtLevel=1"


def archive_key() -> str:
    """What an archive is only valid for: this java and these Spark jars."""
    java = java_executable()
    version = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    return hashlib.sha256(f"{java}\n{version}\n{pyspark.__version__}".encode()).hexdigest()[:12]


def dump_archive(path: Path) -> bool:
    """Write the archive of the classes one small Spark build loads to `path` (atomically);
    False, and no archive, if that failed: the suite then runs without one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")  # beside it: the rename is atomic
    with tempfile.TemporaryDirectory(prefix="longseq-cds-") as tmp:
        work = Path(tmp)
        longseq = [sys.executable, "-m", "longseq.cli.main"]
        env = {**os.environ, "SPARK_SUBMIT_OPTS": f"-XX:ArchiveClassesAtExit={partial} {QUIET} {JIT}"}
        steps = [[*longseq, "generate", "--raw", str(work / "raw"), "--profile", "tiny", "--days", "1"],
                 [*longseq, "build", "--raw", str(work / "raw"), "--data", str(work / "data"), "--start", "2026-01-01",
                  "--engine", "spark", "--master", "local[1]", "--max-len", "16"]]
        done = all(subprocess.run(step, env=env, capture_output=True, timeout=600).returncode == 0 for step in steps)
    if not (done and partial.exists()):
        partial.unlink(missing_ok=True)
        return False
    os.replace(partial, path)
    return True


def archive_options(cache_dir: Path) -> str:
    """The options that start a JVM from the archive (dumped on first use); none if it
    cannot be made, or without a Java (the tests that need one then say so themselves)."""
    try:
        archive = cache_dir / f"spark-classes-{archive_key()}.jsa"
    except (LongseqError, OSError):
        return ""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / "dump.lock", "w") as lock:  # two pytest processes at once: one dumps, one waits
        fcntl.flock(lock, fcntl.LOCK_EX)
        made = archive.exists() or dump_archive(archive)
    return f"-XX:SharedArchiveFile={archive} {QUIET}" if made else ""
