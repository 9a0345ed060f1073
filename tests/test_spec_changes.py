"""A spec given to a command on data built with another one: the model-side settings a build
ignores are named in one warning line, and a spec whose records differ is refused naming
the fields that differ (schemas.spec.spec_differences), not only two fingerprints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from longseq.cli.main import main
from longseq.dataset.spec_record import check_same_spec, record_spec, spec_summary
from longseq.dataset.storage import LocalStorage
from longseq.schemas.contracts import DEFAULT_SPEC
from longseq.schemas.spec import SPECS_DIR, DatasetSpec, SpecError, load_spec, spec_differences, spec_from_dict
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate
from longseq.trainer.distributed import Context
from longseq.trainer.provenance import OtherDataError, check_model_spec
from longseq.trainer.run import open_run
from longseq.trainer.train_config import TrainConfig

ECOMMERCE = load_spec(SPECS_DIR / "ecommerce.yaml")


def _changed(change, spec: DatasetSpec = ECOMMERCE, source: str = "changed.yaml") -> DatasetSpec:
    data = spec.to_dict()
    change(data)
    return spec_from_dict(data, source)


def _model_side(d: dict) -> None:
    d["features"]["category"]["buckets"] = 8192
    d["features"]["price_bucket"]["boundaries"] = [500, 1500, 2000]


def _data_side(d: dict) -> None:
    d["tasks"] = ["click", "cart"]
    d["inputs"]["price_cents"]["type"] = "int32"


# ---------------------------------------------------------------- the differences themselves


DATA_CHANGES = {
    "tasks [click, cart, purchase] -> [click, cart]": lambda d: d.update(tasks=["click", "cart"]),
    "inputs.price_cents.type int64 -> int32": lambda d: d["inputs"]["price_cents"].update(type="int32"),
    "inputs.dwell_ms.required false -> true": lambda d: d["inputs"]["dwell_ms"].update(required=True),
    "inputs.brand_id added": lambda d: d["inputs"].update(brand_id={"type": "int64"}),
    "derived.dwell_ratio.ratio [dwell_ms, image_ms] -> [image_ms, dwell_ms]":
        lambda d: d["derived"]["dwell_ratio"].update(ratio=["image_ms", "dwell_ms"]),
    "features.category.sides [history, target] -> [target]": lambda d: d["features"]["category"].update(sides=["target"]),
    "features.category.source category_id -> price_cents":
        lambda d: d["features"]["category"].update(source="price_cents"),
    "features.dwell_ratio removed": lambda d: d["features"].pop("dwell_ratio"),
    "inputs order [category_id, price_cents, dwell_ms, image_ms] -> [price_cents, category_id, dwell_ms, image_ms]":
        lambda d: d.update(inputs={k: d["inputs"][k] for k in ("price_cents", "category_id", "dwell_ms", "image_ms")}),
}


@pytest.mark.parametrize("expected", list(DATA_CHANGES))
def test_each_data_side_change_is_named_and_changes_the_fingerprint(expected):
    other = _changed(DATA_CHANGES[expected])
    assert spec_differences(ECOMMERCE, other) == [expected]
    assert other.fingerprint != ECOMMERCE.fingerprint  # what the fingerprint covers, the differences name
    assert spec_differences(ECOMMERCE, other, "model") == []


def test_model_side_changes_are_named_on_their_side_only():
    other = _changed(_model_side)
    assert spec_differences(ECOMMERCE, other) == [] and other.fingerprint == ECOMMERCE.fingerprint
    assert spec_differences(ECOMMERCE, other, "model") == [
        "features.category.buckets 4096 -> 8192",
        "features.price_bucket.boundaries [500, 1000, 2000, 5000, 10000, 20000, 50000] -> [500, 1500, 2000]",
    ]
    assert other.model_fingerprint != ECOMMERCE.model_fingerprint
    # names, docs and the logs' column names are neither side
    renamed = _changed(lambda d: (d.update(name="shop", columns={}), d["inputs"]["price_cents"].update(doc="x")))
    assert spec_differences(ECOMMERCE, renamed) == spec_differences(ECOMMERCE, renamed, "model") == []
    with pytest.raises(ValueError, match="'data' or 'model'"):
        spec_differences(ECOMMERCE, other, "records")  # type: ignore[arg-type]


# ---------------------------------------------------------------- build: the command line, the polars engine


@pytest.fixture(scope="module")
def ecommerce_raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("ecommerce") / "raw"
    generate(raw, PROFILES["tiny"], seed=4, start=SAMPLE_START, spec=ECOMMERCE)
    return raw


def _write(spec: DatasetSpec, path: Path) -> Path:
    path.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    return path


def test_a_build_given_only_other_model_settings_says_so_in_one_line_and_builds(ecommerce_raw, tmp_path, capsys):
    data = tmp_path / "data"

    def build(day, spec_file: Path) -> int:
        return main(["build", "--raw", str(ecommerce_raw), "--data", str(data), "--start", str(day), "--max-len", "8",
                     "--engine", "polars", "--spec", str(spec_file)])

    assert build(SAMPLE_START, SPECS_DIR / "ecommerce.yaml") == 0
    assert "warning" not in capsys.readouterr().err  # a new output takes the spec as it is
    recorded = (data / "spec.yaml").read_bytes()
    model_file = _write(_changed(_model_side), tmp_path / "model.yaml")
    day2 = SAMPLE_START.fromordinal(SAMPLE_START.toordinal() + 1)
    assert build(day2, model_file) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        f"warning: {model_file} differs from {data}/spec.yaml in settings only the model reads "
        f"(features.category.buckets 4096 -> 8192; features.price_bucket.boundaries [500, 1000, 2000, 5000, 10000, "
        f"20000, 50000] -> [500, 1500, 2000]), which a build ignores: {data}/spec.yaml keeps its own; to train with "
        f"them, use `longseq train --spec {model_file}`"]
    assert (data / "spec.yaml").read_bytes() == recorded
    assert (data / "reports" / f"ds={day2}" / "build.json").exists()
    # the same spec again: nothing to say
    assert build(day2, SPECS_DIR / "ecommerce.yaml") == 0
    assert "warning" not in capsys.readouterr().err

    # records of another shape: refused, naming the fields, in one line
    assert build(day2, _write(_changed(_data_side), tmp_path / "data-side.yaml")) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("longseq build: error: ")
    assert (f"holds data of dataset spec 'ecommerce' ({ECOMMERCE.fingerprint}), not of 'ecommerce' "
            f"({_changed(_data_side).fingerprint}), which differs in tasks [click, cart, purchase] -> [click, cart]; "
            f"inputs.price_cents.type int64 -> int32: use the spec") in err
    assert (data / "spec.yaml").read_bytes() == recorded


# ---------------------------------------------------------------- the other refusals name the fields


def test_the_recorded_spec_and_a_model_name_the_fields_they_differ_in(tmp_path):
    other = _changed(_data_side)
    with pytest.raises(SpecError, match=r"which differs in tasks \[click, cart, purchase\] -> \[click, cart\]; "
                                        r"inputs.price_cents.type int64 -> int32: use the spec"):
        check_same_spec(ECOMMERCE, other, "DATA")
    with pytest.raises(OtherDataError, match=r"which differs in tasks \[click, cart, purchase\] -> \[click, cart\]; "
                                             r"inputs.price_cents.type int64 -> int32: a model reads only"):
        check_model_spec(ECOMMERCE, other, tmp_path, "DATA")
    # many differences: the first few, and how many more
    with pytest.raises(SpecError, match=r"tasks \[click, cart, purchase\] -> \[finish, skip, like, comment\]; .*; "
                                        r"and \d+ more: use the spec"):
        check_same_spec(ECOMMERCE, DEFAULT_SPEC, "DATA")


def test_a_resume_with_other_model_settings_names_them(tmp_path):
    cpu, cfg = Context(0, 1, torch.device("cpu")), TrainConfig(preset="tiny", checkpoint_every=1)
    open_run(tmp_path, cfg, cpu, 10, log=lambda m: None, spec=ECOMMERCE).save()
    with pytest.raises(OtherDataError, match=r"set up otherwise than in spec 'ecommerce' \(\w+\), which differs in "
                                             r"features.category.buckets 4096 -> 8192; features.price_bucket.boundaries "
                                             r"\[500, 1000, .*\] -> \[500, 1500, 2000\]: resume with the spec"):
        open_run(tmp_path, cfg, cpu, 10, log=lambda m: None, spec=_changed(_model_side))


def test_a_reader_of_another_spec_is_told_the_fields_from_the_outputs_spec_yaml(tmp_path):
    """A manifest records only the fingerprint; DATA/spec.yaml has the whole spec."""
    from longseq.dataset.published import published_files
    from tests.test_trainer_spec import published_day, records_of

    data = published_day(tmp_path / "data", ECOMMERCE, records_of(ECOMMERCE, 8))
    assert spec_summary(ECOMMERCE) == {"name": "ecommerce", "fingerprint": ECOMMERCE.fingerprint}
    with pytest.raises(SpecError, match=r"not of the expected 'ecommerce' \(\w+\), which differs in tasks "
                                        r"\[click, cart, purchase\] -> \[click, cart\]; inputs.price_cents.type "
                                        r"int64 -> int32: read it with"):
        published_files(data, SAMPLE_START, spec=_changed(_data_side))


# ---------------------------------------------------------------- the stream


@pytest.mark.spark
def test_the_stream_warns_once_as_it_starts_not_at_each_days_close(spark, tmp_path):
    """Default-shaped logs, read by a spec that adds a normalized feature of play_ms; the
    stream is given the same spec with another mean and std."""
    from longseq.etl.stream.job import run_stream
    from longseq.etl.stream.settings import StreamConfig, StreamSettings
    from tests.test_stream_sim import DAYS, HOUR_MS, arrivals
    from tests.test_stream_spark import land

    with_play = _changed(lambda d: d["features"].update(play={"kind": "numeric", "source": "play_ms"}), DEFAULT_SPEC)
    given = _changed(lambda d: d["features"]["play"].update(mean=5000.0, std=2000.0), with_play, "given.yaml")
    raw, data = tmp_path / "raw", tmp_path / "data"
    generate(raw, PROFILES["tiny"].with_sizes(users=None, days=2), seed=11, start=SAMPLE_START)
    land(arrivals(raw, DAYS[:2], with_play, 30 * 60_000, seed=3, rows_per_file=(50, 200), files_per_batch=(1, 1)),
         tmp_path / "landing")
    record_spec(LocalStorage(), str(data), with_play)  # as the first build of the output would
    recorded = (data / "spec.yaml").read_bytes()
    logged: list[str] = []
    config = StreamConfig(raw=str(tmp_path / "landing"), out=str(data), checkpoint=str(tmp_path / "ckpt"),
                          settings=StreamSettings(max_len=16, lateness_ms=2 * HOUR_MS, spec=given),
                          watermark_delay_ms=30 * 60_000, mode="once", max_files_per_trigger=8, state_partitions=2)
    summary = run_stream(spark, config, log=logged.append)
    assert summary["closed_days"] == [d.isoformat() for d in DAYS[:2]]  # each by the build, which said nothing
    assert [m for m in logged if "warning" in m] == [
        f"warning: given.yaml differs from {data}/spec.yaml in settings only the model reads (features.play.mean "
        f"0 -> 5000; features.play.std 1 -> 2000), which a build ignores: {data}/spec.yaml keeps its own; to train "
        f"with them, use `longseq train --spec given.yaml`"]
    assert (data / "spec.yaml").read_bytes() == recorded


def test_other_logs_names_than_the_recorded_ones_are_said_in_one_line():
    """columns is not in the fingerprint (the records are the same): a build reads the logs with
    the names it is given, but DATA/spec.yaml keeps its own, and the raw suite reads those."""
    from longseq.dataset.spec_record import spec_warnings

    renamed = _changed(lambda d: d["columns"].update(click="isClick", item_id="sku"))
    assert renamed.fingerprint == ECOMMERCE.fingerprint
    assert spec_warnings(ECOMMERCE, renamed, "/d") == [
        "warning: changed.yaml names the logs' columns otherwise than /d/spec.yaml (columns.click: click -> isClick; "
        "columns.item_id: product_id -> sku): this build reads the logs and writes their quarantine under its names, "
        "but /d/spec.yaml keeps its own, which `validate --suite raw` reads unless given --spec"]
    assert spec_warnings(ECOMMERCE, ECOMMERCE, "/d") == [] and spec_warnings(None, renamed, "/d") == []
