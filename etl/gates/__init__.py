"""The gates between building and training: `validation.py` (the Great Expectations
suites for raw logs and request records) and `publish.py` (a validated day made readable,
one atomic manifest a day)."""
