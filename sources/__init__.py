"""Producers of raw impression logs (contract 1): the synthetic generator and the dataset
adapters. They are inputs to the build, not part of it: they write raw partitions of a
dataset spec's raw log (the default spec's unless given another) through dataset/raw.py,
and nothing in etl/ or trainer/ imports them."""

import datetime as dt

SAMPLE_START = dt.date(2026, 1, 1)  # the first day of generated and adapted samples, unless told otherwise
