"""No silent corruption of a build output (issue 17): one writer at a time (a lock per
--data directory, freed by the kernel when its holder dies), temp dirs of killed builds
removed, and days built on the old state of a rebuilt day marked stale until rebuilt."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from longseq.cli.main import main
from longseq.dataset.layout import BuildLayout
from longseq.dataset.output_lock import LOCK_NAME, output_lock
from longseq.dataset.published import published_days
from longseq.dataset.storage import LocalStorage
from longseq.etl.batch.build import BuildConfig, build
from longseq.etl.gates.publish import publish
from longseq.etl.gates.validation import ValidationFailed
from longseq.schemas.contracts import SUCCESS_MARKER
from longseq.schemas.errors import MissingPrerequisiteError
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate

REPO = Path(__file__).resolve().parents[1]
DAY = lambda i: SAMPLE_START + dt.timedelta(days=i)  # noqa: E731


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw")
    generate(out, PROFILES["tiny"].with_sizes(users=30, days=4), seed=4, start=SAMPLE_START)
    return out


def polars():
    from longseq.etl.batch.polars_engine import PolarsEngine

    return PolarsEngine()


def _quiet(_: str) -> None:
    pass


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "longseq.cli.main", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO)


def _holder(data: Path, temps: bool = False) -> subprocess.Popen:
    """Another process that holds data's lock (as `build` would) until killed; with temps,
    it leaves a build's temp dirs behind, as a build killed mid-day does."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from longseq.dataset.output_lock import output_lock
        with output_lock({str(data)!r}, "build"):
            if {temps!r}:
                for kind in ("requests", "quarantine", "state"):
                    d = Path({str(data)!r}) / kind / ".ds={DAY(1)}.0123456789ab.tmp"
                    d.mkdir(parents=True)
                    (d / "part-00000.parquet").write_bytes(b"half written")
            print("locked", flush=True)
            time.sleep(300)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def _records(out: Path, day: dt.date) -> list[dict]:
    return sorted(pq.read_table(out / "requests" / f"ds={day}").to_pylist(), key=lambda r: r["request_id"])


# ---------------------------------------------------------------- the lock


@pytest.mark.subprocess
def test_a_second_process_fails_at_once_naming_the_holder(raw, tmp_path):
    data = tmp_path / "data"
    holder = _holder(data)
    try:
        for args in (["build", "--engine", "polars", "--raw", str(raw), "--start", str(DAY(0))],
                     ["validate", "--start", str(DAY(0))],
                     ["publish", "--start", str(DAY(0))]):
            t0 = time.perf_counter()
            r = _cli(*args, "--data", str(data))
            seconds = time.perf_counter() - t0
            assert r.returncode == 1, r.stderr
            assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
            assert f"is in use by pid {holder.pid} on {socket.gethostname()} (build: `-c`), since 20" in r.stderr
            assert seconds < 10, f"{args[0]} waited {seconds:.1f} s for the lock"
        assert not (data / "requests").exists(), "the refused build wrote nothing"
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.subprocess
def test_a_holder_killed_with_sigkill_leaves_the_lock_free_and_its_temp_dirs_are_removed(raw, tmp_path):
    data = tmp_path / "data"
    holder = _holder(data, temps=True)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    leftovers = sorted(data.glob("*/.ds=*.tmp"))
    assert len(leftovers) == 3 and json.loads((data / LOCK_NAME).read_text())["pid"] == holder.pid

    r = _cli("build", "--engine", "polars", "--raw", str(raw), "--data", str(data), "--start", str(DAY(0)),
             "--end", str(DAY(1)))
    assert r.returncode == 0, r.stderr
    assert "removed 3 temp dir(s) left by interrupted builds" in r.stderr
    assert not any(p.exists() for p in leftovers)
    assert BuildLayout(str(data)).built_days(LocalStorage()) == [DAY(0), DAY(1)]
    assert (data / LOCK_NAME).read_text() == "", "a released lock names no holder"


def test_the_lock_is_re_entrant_within_a_process_and_excludes_other_processes(raw, tmp_path):
    data = tmp_path / "data"
    probe = f"from longseq.dataset.output_lock import output_lock\nwith output_lock({str(data)!r}, 'publish'): pass"
    with output_lock(str(data), "publish") as locked:
        assert locked
        build(polars(), BuildConfig(str(raw), str(data), DAY(0)), log=_quiet)  # takes it again: no deadlock
        other = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert other.returncode != 0 and "OutputLockedError" in other.stderr and f"pid {os.getpid()}" in other.stderr
    other = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stderr


def test_the_same_process_holds_one_lock_per_output_and_the_message_names_it(tmp_path):
    """Two outputs lock independently; a holder recorded in the file is named in full."""
    with output_lock(str(tmp_path / "a"), "build"), output_lock(str(tmp_path / "b"), "validate"):
        holder = json.loads((tmp_path / "b" / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["operation"] == "validate" and holder["host"]
    # released: a new holder can take it, and the file no longer names the old one
    with output_lock(str(tmp_path / "b"), "publish"):
        assert json.loads((tmp_path / "b" / LOCK_NAME).read_text())["operation"] == "publish"


def test_non_local_outputs_are_not_locked_and_say_so_once():
    messages: list[str] = []
    for _ in range(2):
        with output_lock("hdfs://namenode/longseq/data-test-warning", "build", log=messages.append) as locked:
            assert locked is False
    assert len(messages) == 1 and "no lock" in messages[0]


def test_leftover_temp_dirs_are_removed_only_by_a_build_of_the_same_output(raw, tmp_path):
    data, other = tmp_path / "data", tmp_path / "other"
    build(polars(), BuildConfig(str(raw), str(data), DAY(0)), log=_quiet)
    stray = [d / kind / f".ds={DAY(1)}.feedbeef0001.tmp" for d in (data, other) for kind in ("requests", "state")]
    for path in stray:
        path.mkdir(parents=True)
        (path / SUCCESS_MARKER).touch()
    keep = data / "requests" / ".not-a-temp-dir"
    keep.mkdir()
    messages: list[str] = []
    build(polars(), BuildConfig(str(raw), str(data), DAY(1)), log=messages.append)
    assert [p.exists() for p in stray] == [False, False, True, True] and keep.exists()
    assert any(m.startswith("removed 2 temp dir(s)") for m in messages)


# ---------------------------------------------------------------- stale days


def _changed_raw(raw: Path, tmp_path: Path) -> Path:
    """raw with day 0 changed (a third of its users' rows dropped): a rebuild of day 0 then
    gives a different state, so days built on the old one really are wrong."""
    import shutil

    changed = tmp_path / "raw-changed"
    shutil.copytree(raw, changed)
    part = changed / f"ds={DAY(0)}"
    table = pq.read_table(part)
    keep = [u % 3 != 0 for u in table.column("user_id").to_pylist()]
    for f in part.glob("*.parquet"):
        f.unlink()
    pq.write_table(table.filter(keep), part / "part-00000.parquet")
    return changed


def test_a_rebuilt_day_makes_later_days_stale_until_catch_up_rebuilds_them(raw, tmp_path, capsys):
    data = tmp_path / "data"
    layout, storage = BuildLayout(str(data)), LocalStorage()
    build(polars(), BuildConfig(str(raw), str(data), DAY(0), DAY(2)), log=_quiet)
    publish(str(data), DAY(0), DAY(2), override_reason="test: not validated", log=_quiet)
    assert published_days(str(data)) == [DAY(0), DAY(1), DAY(2)]

    # day 0's input changed and it is rebuilt: days 1-2 were built on its old state
    changed = _changed_raw(raw, tmp_path)
    messages: list[str] = []
    (report,) = build(polars(), BuildConfig(str(changed), str(data), DAY(0)), log=messages.append)
    assert any(f"2 later day(s) {DAY(1)}..{DAY(2)} were built on the previous state of {DAY(0)}: marked stale" in m
               for m in messages)
    assert published_days(str(data)) == []  # day 0 awaits validation; days 1-2 may not be read
    for day in (DAY(1), DAY(2)):
        marker = json.loads((data / "reports" / f"ds={day}" / "stale.json").read_text())
        assert marker["rebuilt_day"] == str(DAY(0)) and marker["rebuilt_run_id"] == report["run_id"]
        assert not layout.is_current(storage, day)

    # nothing builds on, validates or publishes a stale day, not even with an override
    with pytest.raises(MissingPrerequisiteError, match=f"state after {DAY(2)} is stale.*--catch-up"):
        build(polars(), BuildConfig(str(changed), str(data), DAY(3)), log=_quiet)
    with pytest.raises(ValidationFailed, match=f"ds={DAY(1)} is stale"):
        publish(str(data), DAY(1), override_reason="test: not validated", log=_quiet)
    assert main(["validate", "--data", str(data), "--start", str(DAY(1)), "--end", str(DAY(2))]) == 1
    err = capsys.readouterr().err
    assert f"refusing to validate: ds={DAY(1)} is stale" in err and "1 more stale day" in err

    # --catch-up rebuilds them in order from day 0's new state, then day 3
    stale_records = _records(data, DAY(1))
    messages = []
    build(polars(), BuildConfig(str(changed), str(data), DAY(3), catch_up=True), log=messages.append)
    assert any(f"--catch-up: building 2 missing or stale day(s) {DAY(1)}..{DAY(2)} first (2 stale)" in m
               for m in messages)
    assert layout.stale_days(storage) == [] and layout.built_days(storage) == [DAY(i) for i in range(4)]
    fresh = tmp_path / "fresh"
    build(polars(), BuildConfig(str(changed), str(fresh), DAY(0), DAY(3)), log=_quiet)
    for i in range(4):
        assert _records(data, DAY(i)) == _records(fresh, DAY(i)), f"ds={DAY(i)}"
    assert stale_records != _records(fresh, DAY(1)), "the stale day really was wrong"


def test_stale_days_are_never_taken_for_a_cold_start(raw, tmp_path):
    """Days 1-2 stale and day 0's rebuild lost (a failed commit deletes its report): day 3
    must not start from empty histories as if nothing had been built before it."""
    data = tmp_path / "data"
    build(polars(), BuildConfig(str(raw), str(data), DAY(0), DAY(2)), log=_quiet)
    build(polars(), BuildConfig(str(raw), str(data), DAY(0)), log=_quiet)
    (data / "reports" / f"ds={DAY(0)}" / "build.json").unlink()
    for catch_up in (False, True):
        with pytest.raises(MissingPrerequisiteError, match=f"every day built before {DAY(3)}.*is stale.*"
                                                           f"rebuild from {DAY(0)}"):
            build(polars(), BuildConfig(str(raw), str(data), DAY(3), catch_up=catch_up), log=_quiet)
