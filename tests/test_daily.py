"""What the daily DAG runs (pipelines/daily.py), without Airflow: each stage is a command line a
person could type, and it is one the current `longseq` parser accepts without a warning."""

from __future__ import annotations

import shlex

import pytest

from longseq.pipelines.daily import DailySettings, build_command, publish_command, train_command, validate_command
from longseq.cli.main import build_parser
from longseq.schemas.contracts import DEFAULT_MAX_LEN


def _longseq_argv(command: str, capsys) -> list[list[str]]:
    """Each `longseq ...` or spark_job.py invocation in a shell command, parsed by the CLI."""
    parsed = []
    for part in command.split(" && "):
        words = shlex.split(part)
        if words[0].startswith("PYSPARK_PYTHON="):  # spark-submit ... cli/spark_job.py ARGS = longseq build ARGS
            argv = ["build", *words[words.index(next(w for w in words if w.endswith("spark_job.py"))) + 1:]]
        else:
            argv = words[1:]
        parsed.append(build_parser().parse_args(argv))
    assert capsys.readouterr().err == "", "nothing to warn about"
    return parsed


def test_stage_commands_are_what_a_person_would_run(tmp_path, capsys):
    s = DailySettings(raw="/data/raw", data=str(tmp_path), spark_master="yarn",
                      spark_conf={"spark.executor.memory": "8g"}, run_dir="/runs", validation_config="/etc/v.yaml")
    cmd = build_command(s, "2026-01-05")
    assert "--master yarn --conf spark.executor.memory=8g" in cmd
    assert cmd.rstrip().endswith(f"--start 2026-01-05 --max-len {DEFAULT_MAX_LEN}")
    assert "cli/spark_job.py" in cmd and cmd.startswith("PYSPARK_PYTHON=")
    (build,) = _longseq_argv(cmd, capsys)
    assert build.command == "build" and build.data == str(tmp_path) and build.raw == "/data/raw"

    (validate,) = _longseq_argv(validate_command(s, "2026-01-05"), capsys)
    assert validate.command == "validate" and str(validate.start) == "2026-01-05" and str(validate.config) == "/etc/v.yaml"
    assert "--max-len" not in validate_command(s, "2026-01-05"), "validation reads the bound from the build report"
    assert validate.engine == "spark" and validate.master == "yarn"
    s.validation_engine = "pandas"
    (local,) = _longseq_argv(validate_command(s, "2026-01-05"), capsys)
    assert local.engine == "pandas" and local.master is None, "no Spark setting for the pandas engine"
    s.validation_engine = "spark"
    (publish,) = _longseq_argv(publish_command(s, "2026-01-05"), capsys)
    assert publish.command == "publish" and publish.data == str(tmp_path)

    assert train_command(s, "2026-01-05").startswith("echo"), "nothing published yet: nothing to train on"
    for day in ("2026-01-02", "2026-01-03", "2026-01-04"):
        manifest = tmp_path / "published" / f"ds={day}" / "manifest.json"
        manifest.parent.mkdir(parents=True)
        manifest.write_text("{}")
    s.train_days = 2
    cmd = train_command(s, "2026-01-05")
    assert "--start 2026-01-03 --end 2026-01-04" in cmd and "evaluate" in cmd and "--start 2026-01-05" in cmd
    train, evaluate = _longseq_argv(cmd, capsys)
    assert (train.command, evaluate.command) == ("train", "evaluate") and train.run_dir == evaluate.run_dir


def test_empty_params_take_the_defaults_and_the_old_name_out_is_refused():
    s = DailySettings.from_params({"raw": "/r", "data": "/d", "max_len": None, "spark_master": ""})
    assert s.data == "/d" and s.max_len == DEFAULT_MAX_LEN and s.spark_master == DailySettings(raw="", data="").spark_master
    with pytest.raises(ValueError, match="`out` is now `data`"):
        DailySettings.from_params({"raw": "/r", "out": "/d"})


def test_the_spec_param_reaches_the_build_only(tmp_path, capsys):
    """The build records the spec (DATA/spec.yaml); the later stages read it from there."""
    from longseq.schemas.spec import SPECS_DIR

    spec = str(SPECS_DIR / "ecommerce.yaml")
    s = DailySettings.from_params({"raw": "/data/raw", "data": str(tmp_path), "spec": spec})
    (build,) = _longseq_argv(build_command(s, "2026-01-05"), capsys)
    assert str(build.spec) == spec
    (validate,) = _longseq_argv(validate_command(s, "2026-01-05"), capsys)
    assert validate.spec is None
    (default,) = _longseq_argv(build_command(DailySettings.from_params({"raw": "/r", "data": "/d", "spec": ""}),
                                             "2026-01-05"), capsys)
    assert default.spec is None
