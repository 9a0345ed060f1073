"""Spark jobs and their entry points, the polars engine, the log generator, adapters, validation, publishing."""
