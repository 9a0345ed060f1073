"""The `longseq` command line, run as a user runs it."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import pytest

from etl.cli import main
from etl.raw_logs import read_raw_partition
from schemas.contracts import RAW_LOG

LONGSEQ = str(Path(sys.executable).with_name("longseq"))
SUBCOMMANDS = ["generate", "adapt", "build", "validate", "publish", "train", "evaluate", "score", "demo", "bench"]


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([LONGSEQ, *args], capture_output=True, text=True, timeout=300, **kw)


@pytest.mark.parametrize("argv", [[], *([c] for c in SUBCOMMANDS)])
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: longseq")
    if not argv:
        for c in SUBCOMMANDS:
            assert c in out


def test_generate_writes_valid_contract_1_data(tmp_path):
    """The command from the issue, through the installed console script."""
    r = run("generate", "--out", str(tmp_path), "--users", "200", "--days", "3", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "Traceback" not in r.stderr
    rows = 0
    for d in range(3):
        table = read_raw_partition(tmp_path, dt.date(2026, 1, 1) + dt.timedelta(days=d))
        assert table.schema.names == RAW_LOG.names
        rows += table.num_rows
    assert f"wrote {rows:,} rows" in r.stdout
    assert "ds=2026-01-03" in r.stderr  # progress per day


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "--out", "X", "--users", "0"], "--users: must be at least 1"),
        (["generate", "--out", "X", "--days", "two"], "--days: not an integer"),
        (["generate", "--out", "X", "--start", "2026-13-01"], "not a date in YYYY-MM-DD form"),
        (["generate", "--out", "X", "--dirty", "0.9"], "must be a fraction in [0, 0.5]"),
        (["generate", "--out", "X", "--profile", "huge"], "invalid choice: 'huge'"),
        (["generate"], "required: --out"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["bench", "nope"], "invalid choice: 'nope'"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_bad_output_path_is_one_line_not_a_traceback(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = run("generate", "--out", str(blocker / "out"), "--users", "2", "--days", "1")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and str(blocker) in r.stderr


def test_demo_runs_and_summarises(tmp_path):
    r = run("demo", "--out", str(tmp_path / "demo"), "--profile", "tiny")
    assert r.returncode == 0, r.stderr
    assert "raw logs:" in r.stdout and "label rates:" in r.stdout and "dirty rows" in r.stdout
    assert "request records" in r.stdout and "quarantined" in r.stdout
    assert "validate ds=2026-01-02: PASSED" in r.stdout and "Data Docs:" in r.stdout
    assert "published ds=2026-01-02" in r.stdout
    built = re.search(r"-> ([\d,]+) request records", r.stdout).group(1)
    assert f"reader: {built} requests in " in r.stdout, "every published record comes back through the reader"
    assert "train: " in r.stdout and re.search(r"finish\s+0\.\d{4}\s+0\.\d{4}", r.stdout), "per-task AUC and GAUC"
    assert (tmp_path / "demo" / "raw" / "ds=2026-01-01" / "_SUCCESS").exists()


def test_java_missing_is_a_clear_error(tmp_path, monkeypatch):
    """A command that needs Spark says Java is missing instead of failing inside py4j."""
    from etl.spark_session import require_java
    from schemas.errors import MissingPrerequisiteError

    monkeypatch.setenv("PATH", str(tmp_path))  # no java here
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(MissingPrerequisiteError, match="Java was not found on PATH.*Java 17"):
        require_java()
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(MissingPrerequisiteError, match="has no bin/java"):
        require_java()


def test_unsupported_java_version_is_named(tmp_path, monkeypatch):
    from etl.spark_session import require_java
    from schemas.errors import MissingPrerequisiteError

    fake = tmp_path / "bin" / "java"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho \'openjdk version "21.0.2" 2024-01-16\' >&2\n')
    fake.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(MissingPrerequisiteError, match="is Java 21; Spark 3.5 runs on Java 8-17"):
        require_java()


def test_installed_java_is_accepted():
    from etl.spark_session import require_java

    assert 8 <= require_java() <= 17


def test_make_says_java_is_missing(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        ["/usr/bin/make", "-s", "check-java"], cwd=repo, capture_output=True, text=True,
        env={"PATH": str(tmp_path), "HOME": str(tmp_path)},  # a PATH with no java on it
    )
    assert r.returncode != 0
    assert "Java was not found" in r.stderr and "Java 17" in r.stderr
