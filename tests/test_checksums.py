"""Content checksums: a published file whose bytes change (same size) is refused, by
publishing and by the trainer's readers, with one line naming the file.

Data: two generated days built by the polars engine and published (validation overridden:
the gate is tested in test_publish.py); each test corrupts its own copy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from longseq.cli.main import main
from longseq.pipelines.sample import prepare_generated
from longseq.dataset.layout import KINDS
from longseq.dataset.published import PublishedDataError, published_files, verify_published
from longseq.etl.gates.publish import publish
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES
from longseq.reader.readers import ReaderConfig, open_published

START = SAMPLE_START
END = START + dt.timedelta(days=1)
ENGINES = ("petastorm", "arrow")


def _quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from longseq.etl.batch.polars_engine import PolarsEngine

    sample = prepare_generated(tmp_path_factory.mktemp("checksums"), PROFILES["tiny"], seed=13, max_len=64,
                               engine=PolarsEngine(row_group_bytes=16 * 1024))
    return sample.data


@pytest.fixture()
def copy(data, tmp_path) -> Path:
    out = tmp_path / "data"
    shutil.copytree(data, out)
    return out


def _part(out: Path, day: dt.date = END) -> Path:
    return out / "requests" / f"ds={day}" / "part-00000.parquet"


def _flip16(path: Path) -> None:
    """16 bytes in the middle of the file inverted: the same size, other content."""
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 16] = bytes(b ^ 0xFF for b in raw[mid:mid + 16])
    path.write_bytes(bytes(raw))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_build_report_and_the_manifest_record_each_files_sha256(data):
    report = json.loads((data / "reports" / f"ds={END}" / "build.json").read_text())
    for kind in KINDS:  # by the names the files have after the commit renamed them
        on_disk = {p.name: _sha256(p) for p in sorted((data / kind / f"ds={END}").glob("*.parquet"))}
        assert on_disk and report["checksums"][kind] == on_disk, kind
    manifest = json.loads((data / "published" / f"ds={END}" / "manifest.json").read_text())
    assert manifest["checksums_from"] == "build"
    assert {f["name"]: f["sha256"] for f in manifest["files"]} == report["checksums"]["requests"]


@pytest.mark.parametrize("engine", ENGINES)
def test_the_readers_refuse_a_published_file_whose_bytes_changed(copy, engine):
    _flip16(_part(copy))
    with pytest.raises(PublishedDataError, match="does not match its manifest") as e:
        open_published(str(copy), START, END, ReaderConfig(shuffle=False), engine)
    assert str(_part(copy)) in str(e.value) and "\n" not in str(e.value)


def test_evaluate_on_a_changed_file_exits_with_one_line_naming_it(copy, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(copy), "--start", str(START), "--end", str(END), "--run-dir", str(run),
                 "--preset", "tiny", "--max-steps", "2", "--device", "cpu"]) == 0
    evaluate = ["evaluate", "--run-dir", str(run), "--data", str(copy), "--start", str(END), "--bootstrap", "0",
                "--device", "cpu"]
    assert main(evaluate) == 0
    capsys.readouterr()
    _flip16(_part(copy))
    assert main(evaluate) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(_part(copy)) in err and "does not match its manifest" in err, err


def test_publishing_refuses_bytes_that_differ_from_the_build_report(copy):
    _flip16(_part(copy))
    with pytest.raises(PublishedDataError, match="does not match its build report") as e:
        publish(str(copy), END, override_reason="test", log=_quiet)
    assert str(_part(copy)) in str(e.value)
    extra = _part(copy).with_name("part-00001.parquet")  # a file the build did not write
    shutil.copy(_part(copy, START), extra)
    with pytest.raises(PublishedDataError, match="not the ones its build wrote"):
        publish(str(copy), END, override_reason="test", log=_quiet)


def test_a_day_built_before_checksums_is_published_with_the_checksums_of_its_bytes(copy):
    report_path = copy / "reports" / f"ds={END}" / "build.json"
    report = json.loads(report_path.read_text())
    del report["checksums"]
    report_path.write_text(json.dumps(report))
    (manifest,) = publish(str(copy), END, override_reason="test", log=_quiet)
    assert manifest["checksums_from"] == "publish"
    assert manifest["files"][0]["sha256"] == _sha256(_part(copy))


def test_a_manifest_without_checksums_is_refused_until_published_again(copy):
    path = copy / "published" / f"ds={END}" / "manifest.json"
    manifest = json.loads(path.read_text())
    for f in manifest["files"]:
        del f["sha256"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(PublishedDataError, match=r"without checksums.*longseq publish"):
        published_files(str(copy), START, END)
    publish(str(copy), END, override_reason="test", log=_quiet)
    assert len(published_files(str(copy), START, END)) == 2


@pytest.mark.parametrize("text", ["{not json", "[]", '{"files": "all"}'])
def test_an_unreadable_manifest_is_one_line_naming_it(copy, tmp_path, capsys, text):
    """A manifest that is not JSON, or not a manifest: readers and evaluate stop in one line
    naming the file and how to mend it, not with a JSONDecodeError traceback."""
    path = copy / "published" / f"ds={END}" / "manifest.json"
    path.write_text(text)
    with pytest.raises(PublishedDataError, match="is not a readable manifest") as e:
        open_published(str(copy), START, END, ReaderConfig(shuffle=False), "arrow")
    assert str(path) in str(e.value) and "longseq publish" in str(e.value) and "\n" not in str(e.value)
    capsys.readouterr()
    assert main(["train", "--data", str(copy), "--start", str(START), "--end", str(END), "--run-dir",
                 str(tmp_path / "run"), "--preset", "tiny", "--max-steps", "1", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a readable manifest" in err and "Traceback" not in err, err


@pytest.mark.parametrize("edit", ["emptied", "repeated", "foreign", "rows"])
def test_a_manifest_that_lists_other_files_than_its_build_wrote_is_refused(copy, edit):
    """A manifest edited by hand: its file list emptied (the day would silently drop out), an
    entry repeated (read twice), another day's file added, or its rows changed. Each is
    checked against the build report's checksums and request count, and refused by name."""
    path = copy / "published" / f"ds={END}" / "manifest.json"
    manifest = json.loads(path.read_text())
    if edit == "emptied":
        manifest["files"] = []
    elif edit == "repeated":
        manifest["files"] = manifest["files"] * 2
    elif edit == "foreign":
        other = json.loads((copy / "published" / f"ds={START}" / "manifest.json").read_text())["files"][0]
        shutil.copy(_part(copy, START), _part(copy).with_name("part-00001.parquet"))
        manifest["files"].append({**other, "name": "part-00001.parquet"})
    else:
        manifest["files"][0]["rows"] += 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(PublishedDataError, match="does not match its build report") as e:
        published_files(str(copy), START, END)
    assert f"ds={END}" in str(e.value) and "longseq publish" in str(e.value) and "\n" not in str(e.value)
    if edit != "foreign":  # publishing again writes the build's own list
        publish(str(copy), END, override_reason="test", log=_quiet)
        assert sum(f.rows for f in published_files(str(copy), START, END)) == sum(
            json.loads((copy / "reports" / f"ds={d}" / "build.json").read_text())["requests"] for d in (START, END))


def test_each_file_is_hashed_once_per_process_until_it_changes(copy):
    urls = [f.url for f in published_files(str(copy), START, END)]
    size = sum(f.bytes for f in published_files(str(copy), START, END))
    assert verify_published(urls) == size
    assert verify_published(urls) == 0, "cached by (path, size, mtime)"
    _flip16(_part(copy))  # a new mtime: hashed again, and refused
    with pytest.raises(PublishedDataError, match="does not match"):
        verify_published(urls)


def test_every_storage_gives_the_same_checksum(spark, data):
    from longseq.dataset.storage import ArrowStorage, HadoopStorage, LocalStorage

    part = _part(data)
    uri = f"file://{part}"
    sums = [LocalStorage().checksum(str(part)), ArrowStorage(uri).checksum(uri), HadoopStorage(spark).checksum(uri)]
    assert sums == [_sha256(part)] * 3
    assert LocalStorage().stamp(str(part))[0] == ArrowStorage(uri).stamp(uri)[0] == HadoopStorage(spark).stamp(uri)[0]
