"""`longseq stream` killed with SIGKILL (kill -9) at every step of a micro-batch's commit and
at random times, then restarted from its checkpoint, ends with the daily build's output:
nothing duplicated, nothing lost (etl/stream/sink.py)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from longseq.etl.batch.build import BuildConfig, build
from longseq.etl.batch.polars_engine import PolarsEngine
from longseq.schemas.contracts import DEFAULT_SPEC, LAYOUTS
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate
from tests.test_stream_sim import DAYS, HOUR_MS, arrivals
from tests.test_stream_spark import MAX_LEN, assert_same_days, land

pytestmark = [pytest.mark.spark, pytest.mark.subprocess]
LONGSEQ = str(Path(sys.executable).with_name("longseq"))
LATENESS, DELAY = 2 * HOUR_MS, 30 * 60_000


def _stream(tmp: Path, layout: str, crash_at: str = "", kill_after: float | None = None) -> int:
    """One run of `longseq stream --once`; SIGKILL to its whole process group (the JVM too)
    after `kill_after` seconds. Returns its exit code (-9 when killed)."""
    cmd = [LONGSEQ, "stream", "--once", "--raw", str(tmp / "landing"), "--data", str(tmp / "data"),
           "--checkpoint", str(tmp / "ckpt"), "--lateness", "2h", "--watermark-delay", "30m", "--max-len", str(MAX_LEN),
           "--max-files-per-trigger", "8", "--state-partitions", "2", "--master", "local[2]", "--driver-memory", "1g",
           "--layout", layout]
    env = {**os.environ, "LONGSEQ_STREAM_CRASH_AT": crash_at}
    with open(tmp / "stream.log", "a") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait()


# Each step of a commit is killed in one layout (the sink's steps are the same in both; the
# layout changes what a file holds), to keep the test's stream runs few.
CRASH_POINTS = {LAYOUTS[0]: ["file:1", "hour:*"], LAYOUTS[1]: ["committed:2", "close:*"]}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_killed_at_every_step_and_at_random_the_stream_ends_with_the_batch_output(tmp_path, layout):
    raw = tmp_path / "raw"
    generate(raw, PROFILES["tiny"].with_sizes(users=None, days=len(DAYS)), seed=11, start=SAMPLE_START, dirty=0.04)
    land(arrivals(raw, DAYS, DEFAULT_SPEC, DELAY, seed=3, rows_per_file=(20, 120), files_per_batch=(1, 1)),
         tmp_path / "landing")

    # each point once, in order; every run dies there, then the next run goes on from the checkpoint
    for point in CRASH_POINTS[layout]:
        code = _stream(tmp_path, layout, crash_at=point)
        assert code == -signal.SIGKILL, f"no crash at {point}: exit {code}\n" + (tmp_path / "stream.log").read_text()[-3000:]
    rng = random.Random(0)
    # and at a time nobody chose
    _stream(tmp_path, layout, kill_after=rng.uniform(8, 20))
    assert _stream(tmp_path, layout) == 0 or (tmp_path / "ckpt" / "_longseq" / "ended.json").exists(), \
        (tmp_path / "stream.log").read_text()[-3000:]

    batch = tmp_path / "batch"
    build(PolarsEngine(), BuildConfig(str(raw), str(batch), DAYS[0], DAYS[-1], MAX_LEN, lateness_ms=LATENESS,
                                      layout=layout), log=lambda m: None)
    assert_same_days(tmp_path / "data", batch, DAYS)
    leftovers = [p for p in (tmp_path / "data").rglob(".*") if p.name != ".longseq.lock"]
    assert not list((tmp_path / "data" / "stream" / "staging").glob("*")) and not leftovers, leftovers
