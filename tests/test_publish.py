"""Publishing: only validated days, atomically, and a rebuild takes a day off the shelf."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from longseq.cli.main import main
from longseq.dataset.published import published_files
from longseq.dataset.spec_record import spec_summary
from longseq.etl.batch.build import BuildConfig, build
from longseq.etl.gates.publish import publish
from longseq.etl.gates.validation import ValidationConfig, ValidationFailed, validate
from longseq.schemas.contracts import DEFAULT_SPEC
from longseq.schemas.errors import MissingPrerequisiteError
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate
from longseq.reader.readers import ReaderConfig, open_published
from tests.records import read_records

pytestmark = pytest.mark.spark

DAY = SAMPLE_START
MAX_LEN = 20


def _build(raw: Path, out: Path) -> None:
    from longseq.etl.batch.polars_engine import PolarsEngine

    build(PolarsEngine(), BuildConfig(str(raw), str(out), DAY, DAY, MAX_LEN), log=lambda m: None)


@pytest.fixture()
def built(tmp_path) -> tuple[Path, Path]:
    raw, out = tmp_path / "raw", tmp_path / "out"
    generate(raw, PROFILES["tiny"], seed=5, start=DAY)
    _build(raw, out)
    return raw, out


def test_a_validated_day_is_published_and_a_rebuild_unpublishes_it(spark, built):
    raw, out = built
    assert validate(spark, str(out), DAY, cfg=ValidationConfig(max_len=MAX_LEN))["passed"]
    (manifest,) = publish(str(out), DAY, log=lambda m: None)
    records = sorted((out / "requests" / f"ds={DAY}").glob("*.parquet"))
    assert manifest["rows"] == sum(read_records(f).num_rows for f in records) > 0
    assert manifest["validation"] == "passed" and manifest["max_len"] == MAX_LEN
    assert manifest["spec"] == spec_summary(DEFAULT_SPEC) == {"name": "default",
                                                              "fingerprint": DEFAULT_SPEC.fingerprint}
    assert [Path(f.url.removeprefix("file://")) for f in published_files(str(out), DAY)] == records
    assert published_files(str(out), DAY, spec=DEFAULT_SPEC) == published_files(str(out), DAY)
    read = sum(b.num_requests for b in open_published(str(out), DAY, config=ReaderConfig(shuffle=False)).batches())
    assert read == manifest["rows"]

    _build(raw, out)  # the same day again: readers must not see it until it is validated again
    assert not (out / "published" / f"ds={DAY}" / "manifest.json").exists()
    with pytest.raises(MissingPrerequisiteError, match="not published"):
        open_published(str(out), DAY)
    with pytest.raises(ValidationFailed, match="rebuilt after it was validated"):
        publish(str(out), DAY, log=lambda m: None)


def test_a_failed_validation_blocks_publishing(spark, built):
    _, out = built
    outcome = validate(spark, str(out), DAY, cfg=ValidationConfig(max_len=MAX_LEN // 2))  # longer than allowed
    assert not outcome["passed"]
    with pytest.raises(ValidationFailed, match="failed validation"):
        publish(str(out), DAY, log=lambda m: None)
    assert not (out / "published").exists(), "nothing of the day is published"


def test_the_cli_refuses_an_unvalidated_day_and_records_an_override(built, capsys):
    _, out = built
    assert main(["publish", "--data", str(out), "--start", str(DAY)]) == 1
    err = capsys.readouterr().err
    assert "has not been validated" in err and "Traceback" not in err
    assert main(["publish", "--data", str(out), "--start", str(DAY), "--end", str(DAY - dt.timedelta(days=1))]) == 1
    assert "before --start" in capsys.readouterr().err
    assert main(["publish", "--data", str(out), "--start", str(DAY), "--override-validation", "known issue 42"]) == 0
    manifest = json.loads((out / "published" / f"ds={DAY}" / "manifest.json").read_text())
    assert manifest["validation"] == "override"
    assert json.loads((out / "validation" / f"ds={DAY}" / "override.json").read_text())["reason"] == "known issue 42"
    assert main(["publish", "--data", str(out), "--start", str(DAY + dt.timedelta(days=1))]) == 1
    assert "is not built" in capsys.readouterr().err
