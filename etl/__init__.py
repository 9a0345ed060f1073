"""The writers, one room per flow: `batch/` (the daily and range builds), `stream/` (the same
records from files as they land), `gates/` (validation and publishing), and
`spark_session.py` (a SparkSession, after checking for Java), which all three share."""
