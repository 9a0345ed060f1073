"""The `longseq` command line, run as a user runs it."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import pytest

from longseq.cli.main import build_parser, main
from longseq.dataset.raw import read_raw_partition
from longseq.schemas.contracts import RAW_LOG
from longseq.sources import SAMPLE_START

LONGSEQ = str(Path(sys.executable).with_name("longseq"))
SUBCOMMANDS = ["generate", "adapt", "build", "stream", "validate", "publish", "train", "evaluate", "score", "demo", "bench"]


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


@pytest.mark.subprocess
def test_generate_writes_valid_contract_1_data(tmp_path):
    """The command from the issue, through the installed console script."""
    r = run("generate", "--raw", str(tmp_path), "--users", "200", "--days", "3", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "Traceback" not in r.stderr
    rows = 0
    for d in range(3):
        table = read_raw_partition(tmp_path, SAMPLE_START + dt.timedelta(days=d))
        assert table.schema.names == RAW_LOG.names
        rows += table.num_rows
    assert f"wrote {rows:,} rows" in r.stdout
    assert "ds=2026-01-03" in r.stderr  # progress per day


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "--raw", "X", "--users", "0"], "--users: must be at least 1"),
        (["generate", "--raw", "X", "--days", "two"], "--days: not an integer"),
        (["generate", "--raw", "X", "--start", "2026-13-01"], "not a date in YYYY-MM-DD form"),
        (["generate", "--raw", "X", "--dirty", "0.9"], "must be a fraction in [0, 0.5]"),
        (["generate", "--raw", "X", "--profile", "huge"], "invalid choice: 'huge'"),
        (["generate"], "required: --raw"),
        (["train", "--data", "D", "--start", "2026-01-01", "--run-dir", "R", "--preset", "huge"], "invalid choice: 'huge'"),
        (["evaluate", "--data", "D", "--start", "2026-01-01", "--run-dir", "R", "--device", "gpu"], "not a device: 'gpu'"),
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


def _subparsers() -> dict:
    parser = build_parser()
    (action,) = [a for a in parser._actions if a.dest == "command"]
    return dict(action.choices)


def _options(sub) -> dict:
    return {s: a for a in sub._actions for s in a.option_strings}


def test_one_flag_for_one_thing_in_every_subcommand():
    """The build output is --data, raw logs --raw, days --start/--end, everywhere; a settings
    file is named for what it sets; --device means the same and defaults to auto."""
    from longseq.cli.arguments import date, local_path, location

    subs = _subparsers()
    assert set(subs) == set(SUBCOMMANDS)
    for name, sub in subs.items():
        options = _options(sub)
        help_text = sub.format_help()
        if "--data" in options:
            assert options["--data"].type is location and options["--data"].required, name
        if "--raw" in options:
            assert options["--raw"].type is location, name
        # generate, adapt: the first day to write; stream: the first day to read, of an open-ended stream
        if "--start" in options and name not in ("generate", "adapt", "stream"):
            assert options["--start"].type is date and options["--start"].required and "--end" in options, name
        if "--run-dir" in options:
            assert options["--run-dir"].type is local_path, name
        if "--device" in options:
            assert options["--device"].default is None, f"{name}: unset --device must mean the functions' auto"
        assert not re.search(r"(?<![\w-])--out\b", help_text), f"{name} shows --out"
    assert {n for n, sub in subs.items() if "--data" in _options(sub)} == {
        "build", "stream", "validate", "publish", "train", "evaluate", "score"}


def test_device_defaults_to_auto_everywhere():
    import inspect

    from longseq.trainer.distributed import resolve_device
    from longseq.trainer.evaluate import evaluate, score
    from longseq.trainer.train_config import TrainConfig

    assert TrainConfig().device == "auto"
    assert inspect.signature(evaluate).parameters["device"].default == "auto"
    assert inspect.signature(score).parameters["device"].default == "auto"
    import torch

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_choices_and_defaults_come_from_the_code():
    from longseq.etl.batch.engines import ENGINES
    from longseq.etl.gates.validation import SUITES
    from longseq.schemas.contracts import DEFAULT_MAX_LEN
    from longseq.sources.generate import PROFILES
    from longseq.trainer.model_config import ARCHS, PRESETS

    subs = _subparsers()
    assert tuple(_options(subs["train"])["--arch"].choices) == ARCHS
    assert list(_options(subs["train"])["--preset"].choices) == list(PRESETS)
    assert tuple(_options(subs["build"])["--engine"].choices) == ENGINES
    assert tuple(_options(subs["validate"])["--suite"].choices) == SUITES
    assert sorted(_options(subs["generate"])["--profile"].choices) == sorted(PROFILES)
    assert _options(subs["build"])["--max-len"].default == DEFAULT_MAX_LEN


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU-only message")
def test_a_missing_gpu_is_one_line(tmp_path, capsys):
    assert main(["evaluate", "--run-dir", str(tmp_path), "--data", str(tmp_path), "--start", "2026-01-01",
                 "--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert "device cuda:0 is not available" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, old", [
    (["generate", "--raw", "r", "--out", "r"], "--out"),
    (["build", "--raw", "r", "--data", "o", "--out", "o", "--start", "2026-01-01"], "--out"),
    (["validate", "--data", "o", "--start", "2026-01-02", "--ds", "2026-01-02"], "--ds"),
    (["train", "--data", "o", "--start", "2026-01-02", "--run-dir", "r", "--config", "t.yaml"], "--config"),
    (["demo", "--out", "d"], "--out"),
    # a prefix of a current flag is not that flag: --out must not quietly mean --output
    (["score", "--run-dir", "r", "--data", "d", "--start", "2026-01-02", "--output", "s.parquet", "--out", "x"], "--out"),
])
def test_old_spellings_are_refused_in_one_line(argv, old, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.splitlines() == [err] and old in err


def test_results_go_to_stdout_and_progress_to_stderr(tmp_path, capsys):
    raw, data = tmp_path / "raw", tmp_path / "data"
    assert main(["generate", "--raw", str(raw), "--profile", "tiny", "--days", "1", "--users", "20"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("wrote ") and f"ds={SAMPLE_START}:" in err and f"ds={SAMPLE_START}" not in out
    assert main(["build", "--engine", "polars", "--raw", str(raw), "--data", str(data), "--start", str(SAMPLE_START),
                 "--max-len", "50"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("build: ") and "request records" in out
    assert f"ds={SAMPLE_START}: " in err and "rows ->" in err and "cold start" in err
    assert main(["publish", "--data", str(data), "--start", str(SAMPLE_START), "--override-validation", "test"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"published ds={SAMPLE_START}") and not err


@pytest.mark.subprocess
def test_bad_output_path_is_one_line_not_a_traceback(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = run("generate", "--raw", str(blocker / "out"), "--users", "2", "--days", "1")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and str(blocker) in r.stderr


@pytest.mark.spark
@pytest.mark.subprocess
def test_demo_runs_and_summarises(tmp_path):
    r = run("demo", "--work", str(tmp_path / "demo"), "--profile", "tiny", "--preset", "tiny")
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
    from longseq.etl.spark_session import require_java
    from longseq.schemas.errors import MissingPrerequisiteError

    monkeypatch.setenv("PATH", str(tmp_path))  # no java here
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(MissingPrerequisiteError, match="Java was not found on PATH.*Java 17"):
        require_java()
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(MissingPrerequisiteError, match="has no bin/java"):
        require_java()


def test_unsupported_java_version_is_named(tmp_path, monkeypatch):
    from longseq.etl.spark_session import require_java
    from longseq.schemas.errors import MissingPrerequisiteError

    fake = tmp_path / "bin" / "java"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho \'openjdk version "21.0.2" 2024-01-16\' >&2\n')
    fake.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(MissingPrerequisiteError, match="is Java 21; Spark 3.5 runs on Java 8-17"):
        require_java()


@pytest.mark.spark
def test_installed_java_is_accepted():
    from longseq.etl.spark_session import require_java

    assert 8 <= require_java() <= 17


@pytest.mark.subprocess
def test_make_says_java_is_missing(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        ["/usr/bin/make", "-s", "check-java"], cwd=repo, capture_output=True, text=True,
        env={"PATH": str(tmp_path), "HOME": str(tmp_path)},  # a PATH with no java on it
    )
    assert r.returncode != 0
    assert "Java was not found" in r.stderr and "Java 17" in r.stderr
