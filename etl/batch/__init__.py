"""The batch build: raw logs -> request records, a day at a time from the history state.

`build.py` plans the days and commits each one (`commit.py`); an engine (`engines.py`:
`spark_engine.py` or `polars_engine.py`) computes a day; `row_rules.py` (which rows are
quarantined, and why) and `feature_values.py` (each spec feature's value on a raw row) are
defined once for both engines and for the stream.
"""
