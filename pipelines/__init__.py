"""Recipes that chain the stages: `sample.py` (generate or adapt -> build -> validate or
record an override -> publish: what the demo, the benchmarks and the tests run) and
`daily.py` (the commands the daily Airflow DAG runs, built without Airflow)."""
