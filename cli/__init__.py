"""The `longseq` command line, the demo, and what the Airflow DAG runs. It sits above
sources, etl and trainer, and calls them; bench/ and airflow_dags/ sit above it."""
