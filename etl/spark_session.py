"""Creating the SparkSession, after checking that Java is there.

Spark without a JVM fails deep inside py4j with "Java gateway process exited before
sending its port number"; `require_java` says what is missing instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from longseq.schemas.errors import LongseqError, MissingPrerequisiteError
from longseq.schemas.settings_file import load_mapping, typed_settings

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

LOG_CONFIG = Path(__file__).with_name("log4j2.properties")
MIN_JAVA = 8
MAX_JAVA = 17  # the newest Java that Spark 3.5 supports

_JAVA_HELP = "Spark needs Java 17: install it (e.g. `apt-get install openjdk-17-jre-headless`) or set JAVA_HOME."


def java_executable() -> str:
    """Path of the java that Spark will start (JAVA_HOME first, then PATH)."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = os.path.join(home, "bin", "java")
        if os.access(candidate, os.X_OK):
            return candidate
        raise MissingPrerequisiteError(f"JAVA_HOME={home} has no bin/java. {_JAVA_HELP}")
    found = shutil.which("java")
    if not found:
        raise MissingPrerequisiteError(f"Java was not found on PATH. {_JAVA_HELP}")
    return found


def require_java() -> int:
    """Check that a supported Java is installed; return its major version."""
    java = java_executable()
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MissingPrerequisiteError(f"could not run {java} -version ({e}). {_JAVA_HELP}") from None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if out.returncode != 0 or not m:
        raise MissingPrerequisiteError(f"{java} -version failed: {(out.stderr or out.stdout).strip()[:200]}. {_JAVA_HELP}")
    major = int(m.group(1)) if m.group(1) != "1" else int(m.group(2))  # "1.8.0" is Java 8
    if not MIN_JAVA <= major <= MAX_JAVA:
        raise MissingPrerequisiteError(f"{java} is Java {major}; Spark 3.5 runs on Java {MIN_JAVA}-{MAX_JAVA}. {_JAVA_HELP}")
    return major


@dataclass
class SparkConfig:
    """Spark settings, from the CLI (--master, --conf k=v, ...) or a YAML/JSON file.

    master=None leaves master and driver memory to spark-submit, which sets them before
    Python starts.
    """

    master: str | None = "local[*]"
    app_name: str = "longseq"
    shuffle_partitions: int = 8
    driver_memory: str = "4g"
    conf: dict[str, str] = field(default_factory=dict)

    def settings(self) -> dict[str, str]:
        base = {
            "spark.app.name": self.app_name,
            "spark.sql.shuffle.partitions": str(self.shuffle_partitions),
            # ds partitions are UTC dates of request_ts: never let the JVM's zone shift them
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.parquet.compression.codec": "zstd",
            "spark.ui.showConsoleProgress": "false",
            # the vectorized Parquet reader allocates a batch of rows x list length per
            # column: 4,096 rows of 10k-event histories would be 330 MB a column
            "spark.sql.parquet.columnarReaderBatchSize": "256",
        }
        if self.master is not None:
            base |= {
                "spark.master": self.master,
                "spark.driver.memory": self.driver_memory,
                "spark.ui.enabled": "false",
                "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{LOG_CONFIG}",
            }
        return {**base, **{k: str(v) for k, v in self.conf.items()}}

    @classmethod
    def from_file(cls, path: Path) -> "SparkConfig":
        """YAML or JSON with any of: master, app_name, shuffle_partitions, driver_memory, conf."""
        data = load_mapping(path, {f.name for f in fields(cls)}, "Spark config")
        if not isinstance(data.get("conf", {}), dict):
            raise LongseqError(f"{path}: 'conf' must be a mapping of Spark settings")
        if data.get("conf"):  # Spark settings are text: YAML's `true` or `2` there mean "true", "2"
            data["conf"] = {k: (str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, (int, float)) else v)
                            for k, v in data["conf"].items()}
        return cls(**typed_settings(cls, data, str(path)))


def spark_session(config: SparkConfig | None = None) -> "SparkSession":
    """Get or create the SparkSession for `config`, after checking for Java."""
    require_java()
    from pyspark.sql import SparkSession

    config = config or SparkConfig()
    # executors run Python UDFs (the stream's state function) with this interpreter: without
    # it they would run whatever `python3` is on the worker's PATH, without this project
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if (config.master or "").startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # no network lookups for a local run
    builder = SparkSession.builder
    for key, value in config.settings().items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
