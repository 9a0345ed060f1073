"""Choosing a build engine by name. Imports are lazy: the polars engine needs no JVM."""

from __future__ import annotations

from typing import TYPE_CHECKING

from longseq.schemas.errors import LongseqError

if TYPE_CHECKING:  # pragma: no cover
    from longseq.etl.batch.build import Engine
    from longseq.etl.spark_session import SparkConfig

ENGINES = ("spark", "polars")


def make_engine(name: str, spark_config: "SparkConfig | None" = None) -> "Engine":
    if name == "spark":
        from longseq.etl.batch.spark_engine import SparkEngine
        from longseq.etl.spark_session import spark_session

        return SparkEngine(spark_session(spark_config))
    if name == "polars":
        from longseq.etl.batch.polars_engine import PolarsEngine

        return PolarsEngine()
    raise LongseqError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
