"""Paths with spaces and unusual characters, end to end: generate -> build (polars and
Spark) -> validate -> publish -> train -> evaluate -> score, in a directory whose name has
a space, '#', '%', '?', 'ü' and parentheses. The URLs readers get are escaped in one place
(dataset.storage.file_url); what Spark cannot read is refused with one line naming it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from longseq.cli.main import main
from longseq.dataset.published import published_files
from longseq.dataset.storage import PathError
from longseq.etl.batch.build import BuildConfig, build
from longseq.etl.gates.publish import publish
from longseq.etl.gates.validation import ValidationConfig, validate
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate
from longseq.reader.readers import ReaderConfig, open_published
from tests.records import read_records

START = SAMPLE_START
END = START + dt.timedelta(days=1)
MAX_LEN = 32
ODD = "my data #1 (ü) 50% ok?"


def _quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("paths") / ODD
    generate(root / "raw", PROFILES["tiny"], seed=17, start=START)
    return root / "raw"


def test_an_odd_directory_goes_from_raw_logs_to_scores(spark, raw, capsys):
    from longseq.etl.batch.polars_engine import PolarsEngine

    out = raw.parent / "out polars"
    build(PolarsEngine(row_group_bytes=16 * 1024), BuildConfig(str(raw), str(out), START, END, MAX_LEN), log=_quiet)
    for day in (START, END):
        assert validate(spark, str(out), day, cfg=ValidationConfig(max_len=MAX_LEN))["passed"]
    publish(str(out), START, END, log=_quiet)
    files = published_files(str(out), START, END)
    assert all("%20" in f.url and "%23" in f.url and "%3F" in f.url for f in files), files[0].url
    rows = sum(f.rows for f in files)
    for engine in ("petastorm", "arrow"):
        reader = open_published(str(out), START, END, ReaderConfig(shuffle=False, workers=2), engine)
        assert sum(b.num_requests for b in reader.batches()) == rows, engine

    run, scores = raw.parent / "run #2 (ü)", raw.parent / "scores 100%?.parquet"
    days = ["--data", str(out), "--start", str(START), "--end", str(END)]
    assert main(["train", *days, "--run-dir", str(run), "--preset", "tiny", "--max-steps", "3", "--device", "cpu"]) == 0
    assert main(["evaluate", *days, "--run-dir", str(run), "--bootstrap", "0", "--device", "cpu"]) == 0
    assert main(["score", *days, "--run-dir", str(run), "--output", str(scores), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "error" not in err, err
    assert pq.read_metadata(scores).num_rows > 0


def test_the_spark_engine_builds_into_an_odd_directory_and_names_what_it_cannot_take(spark, raw):
    from longseq.etl.batch.spark_engine import SparkEngine

    out = raw.parent / "out spark"
    reports = build(SparkEngine(spark), BuildConfig(str(raw), str(out), START, END, MAX_LEN), log=_quiet)
    assert [r["ds"] for r in reports] == [str(START), str(END)]
    assert validate(spark, str(out), END, cfg=ValidationConfig(max_len=MAX_LEN))["passed"]
    records = sorted((out / "requests" / f"ds={END}").glob("*.parquet"))
    assert sum(read_records(f).num_rows for f in records) == reports[-1]["requests"] > 0

    for bad in ("out [1]", "out {a}"):  # Hadoop globs: these never match themselves
        with pytest.raises(PathError, match=r"Spark reads paths as glob patterns.*'[\[{]'"):
            build(SparkEngine(spark), BuildConfig(str(raw), str(raw.parent / bad), START, START, MAX_LEN), log=_quiet)
