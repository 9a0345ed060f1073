"""A second real shape, end to end: logs of the e-commerce spec from the generator, and
MovieLens under its own spec, through build (both engines, equal to the test reference),
validation, publishing, training and evaluation, with the command line's spec errors."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from longseq.cli.main import main
from longseq.pipelines.sample import build_and_publish, validate_days
from longseq.dataset.layout import day_range
from longseq.etl.batch.build import BuildConfig, build
from longseq.schemas.spec import SPECS_DIR, load_spec
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate
from tests.reference_build import build_reference
from longseq.trainer.evaluate import evaluate
from longseq.trainer.train_config import TrainConfig
from longseq.trainer.train import train
from tests.records import record_rows

ECOMMERCE = load_spec(SPECS_DIR / "ecommerce.yaml")
MOVIELENS = load_spec(SPECS_DIR / "movielens.yaml")
RATINGS = Path(__file__).resolve().parent / "data" / "movielens-sample" / "ratings.csv"
DAYS = day_range(SAMPLE_START, SAMPLE_START + dt.timedelta(days=1))
MAX_LEN = 48
QUIET = lambda m: None  # noqa: E731
TRAIN = TrainConfig(preset="tiny", batch_size=16, max_steps=12, checkpoint_every=6, log_every=6, device="cpu",
                    length={"min_len": 8, "max_len": MAX_LEN})


def _rows(directory: Path) -> list[dict]:
    return [row for f in sorted(directory.glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def _records(data: Path, day: dt.date) -> dict[str, dict]:
    return {r["request_id"]: r for r in record_rows(data / "requests" / f"ds={day}")}


def _reasons(data: Path, day: dt.date) -> Counter:
    return Counter(r["reason"] for r in _rows(data / "quarantine" / f"ds={day}"))


def _matches_reference(raw: Path, data: Path, spec) -> None:
    ref = build_reference(raw, DAYS, MAX_LEN, spec=spec)
    for day in DAYS:
        got, want = _records(data, day), ref.records_of(day)
        assert sorted(got) == sorted(want), f"ds={day}: request ids differ"
        wrong = [rid for rid in want if got[rid] != want[rid]]
        assert not wrong, f"ds={day}: {len(wrong)} records differ from the reference, e.g. {wrong[0]}"
        assert _reasons(data, day) == Counter({k: v for k, v in ref.days[day].quarantined.items() if v})


@pytest.fixture(scope="module")
def ecommerce_raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("ecommerce") / "raw"
    generate(raw, PROFILES["tiny"], seed=4, start=SAMPLE_START, dirty=0.05, spec=ECOMMERCE)
    return raw


def test_generated_ecommerce_logs_build_as_the_reference_does(ecommerce_raw, tmp_path):
    data = tmp_path / "data"
    from longseq.etl.batch.polars_engine import PolarsEngine

    reports = build(PolarsEngine(), BuildConfig(str(ecommerce_raw), str(data), DAYS[0], DAYS[-1], MAX_LEN,
                                                spec=ECOMMERCE), log=QUIET)
    assert sum(r["quarantined"]["missing_category_id"] + r["quarantined"]["label_out_of_range"] for r in reports) > 0
    _matches_reference(ecommerce_raw, data, ECOMMERCE)
    record = next(r for r in _records(data, DAYS[-1]).values() if r["hist_item_id"])
    assert len(record["hist_category"]) == len(record["hist_dwell_ratio"]) == len(record["hist_item_id"])
    assert len(record["tgt_price_bucket"]) == len(record["tgt_click"]) == len(record["tgt_item_id"])


@pytest.mark.slow
def test_ecommerce_spark_build_validate_publish_train_evaluate(ecommerce_raw, tmp_path, spark):
    from longseq.etl.batch.spark_engine import SparkEngine

    data = tmp_path / "data"
    engine = SparkEngine(spark)
    build_and_publish(ecommerce_raw, data, DAYS[0], DAYS[-1], engine=engine, max_len=MAX_LEN, validate=True,
                      spec=ECOMMERCE)
    _matches_reference(ecommerce_raw, data, ECOMMERCE)  # Spark, too
    manifest = (data / "published" / f"ds={DAYS[-1]}" / "manifest.json").read_text()
    assert ECOMMERCE.fingerprint in manifest

    run = tmp_path / "run"
    assert train(str(data), DAYS[0], DAYS[0], run, TRAIN, log=QUIET)["steps"] == TRAIN.max_steps
    result = evaluate(run, str(data), DAYS[1], device="cpu", bootstrap=0, log=QUIET)
    assert list(result["tasks"]) == ["click", "cart", "purchase"]
    assert all(0.0 <= m["auc"] <= 1.0 for m in result["tasks"].values() if m["auc"] == m["auc"])
    # a bad row of another shape makes the gate fail, naming the feature's check
    with pytest.raises(Exception, match="validation failed"):
        validate_days(engine, _corrupt_category(data, tmp_path), [DAYS[-1]], QUIET)


def _corrupt_category(data: Path, tmp_path: Path) -> Path:
    """A copy of the output whose last day has a negative category id on one history event."""
    import shutil

    import pyarrow as pa

    copy = tmp_path / "corrupt"
    shutil.copytree(data, copy, ignore=shutil.ignore_patterns(".longseq.lock"))
    day_dir = copy / "requests" / f"ds={DAYS[-1]}"
    path = next(day_dir.glob("*.parquet"))
    table = pq.read_table(path)
    rows = table.to_pylist()
    row = next(r for r in rows if r["hist_category"])
    row["hist_category"][0] = -5
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    return copy


@pytest.mark.slow
def test_movielens_spec_builds_as_the_reference_and_trains(tmp_path):
    from longseq.sources.movielens import MovieLensMapping, adapt_movielens

    raw, data = tmp_path / "raw", tmp_path / "data"
    adapt_movielens(RATINGS, raw, mapping=MovieLensMapping(days=len(DAYS), start=DAYS[0]), progress=QUIET,
                    spec=MOVIELENS)
    build_and_publish(raw, data, DAYS[0], DAYS[-1], max_len=MAX_LEN, spec=MOVIELENS)
    _matches_reference(raw, data, MOVIELENS)
    genres = {g for r in _records(data, DAYS[-1]).values() for g in r["tgt_genre"]}
    assert len(genres) > 5  # the genre reaches the records
    run = tmp_path / "run"
    train(str(data), DAYS[0], DAYS[0], run, TRAIN, log=QUIET)
    result = evaluate(run, str(data), DAYS[1], device="cpu", bootstrap=0, log=QUIET)
    assert list(result["tasks"]) == list(MOVIELENS.tasks)


@pytest.mark.spark
def test_the_command_line_reports_spec_errors_in_one_line(ecommerce_raw, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text((SPECS_DIR / "ecommerce.yaml").read_text().replace("source: category_id", "source: categry_id"))
    data = tmp_path / "data"
    argv = ["build", "--raw", str(ecommerce_raw), "--data", str(data), "--start", str(DAYS[0]), "--max-len", "8"]
    assert main([*argv, "--spec", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("longseq build: error: ") and "features.category.source: unknown column 'categry_id'" in err
    assert "\n" not in err
    # the logs are not of the default spec: the schema check names the file and the columns
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "part-00000.parquet does not match the raw_log contract" in err and "column 'category_id'" in err
    assert main([*argv, "--spec", str(SPECS_DIR / "ecommerce.yaml")]) == 0
    capsys.readouterr()
    # later commands read the output's spec; one that disagrees is refused before any work
    day2 = ["build", "--raw", str(ecommerce_raw), "--data", str(data), "--start", str(DAYS[1]), "--max-len", "8"]
    assert main([*day2, "--spec", str(SPECS_DIR / "default.yaml")]) == 1
    assert "holds data of dataset spec 'ecommerce'" in capsys.readouterr().err
    assert main(day2) == 0
