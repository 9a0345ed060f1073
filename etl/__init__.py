"""Builds: the batch engines (Spark, polars), quarantine rules, the commit protocol, validation and publishing."""
