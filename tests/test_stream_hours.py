"""The stream's hours (etl/stream/hours.py): each closed hour passes the Great Expectations
gate and is published atomically for readers, in order; a failed hour blocks the hours after
it until an operator publishes it with a reason."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longseq.dataset.published import PublishedDataError, published_hour_files, published_hours, verify_published
from longseq.etl.stream.job import run_stream
from longseq.etl.stream.settings import StreamConfig, StreamSettings
from longseq.dataset.compact import file_layout, materialize
from longseq.schemas.contracts import COMPACT_LAYOUT, DEFAULT_SPEC, LAYOUTS, REQUEST_LAYOUT, day_start_ms
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate
from tests.test_stream_sim import HOUR_MS, arrivals
from tests.test_stream_spark import MAX_LEN, land

pytestmark = pytest.mark.spark
DAY = SAMPLE_START
HOURS = (9, 10)  # the hours with impressions; GX runs once for each


def _landed(tmp_path, share_request_in_hour: int | None = None):
    """One day of generated rows served in HOURS, landed as small files; optionally one request
    of that hour also logged under another user (the gate's request_id_unique fails there)."""
    raw = tmp_path / "raw"
    generate(raw, PROFILES["tiny"].with_sizes(users=60, days=1), seed=21, start=DAY, dirty=0.0)
    batches = arrivals(raw, [DAY], DEFAULT_SPEC, 10 * 60_000, seed=2, rows_per_file=(10, 40), files_per_batch=(1, 1))
    start = day_start_ms(DAY)
    kept = []
    for files in batches:
        for f in files:
            hours = [(ts - start) // HOUR_MS for ts in f.table.column("request_ts").to_pylist()]
            mask = pa.array([h in HOURS for h in hours])
            table = f.table.filter(mask)
            if table.num_rows:
                kept.append([type(f)(f.ds, table)])
    if share_request_in_hour is not None:
        for files in kept:
            table = files[0].table
            rows = table.to_pylist()
            target = [r for r in rows if (r["request_ts"] - start) // HOUR_MS == share_request_in_hour]
            if target:
                copy = {**target[0], "event_id": "shared-copy", "user_id": target[0]["user_id"] + 1}
                files[0] = type(files[0])(files[0].ds, pa.Table.from_pylist(rows + [copy], schema=table.schema))
                break
    land(kept, tmp_path / "landing")


def _config(tmp_path, mode="once", layout: str = REQUEST_LAYOUT) -> StreamConfig:
    return StreamConfig(raw=str(tmp_path / "landing"), out=str(tmp_path / "data"), checkpoint=str(tmp_path / "ckpt"),
                        settings=StreamSettings(max_len=MAX_LEN, lateness_ms=HOUR_MS, spec=None, layout=layout),
                        watermark_delay_ms=10 * 60_000, mode=mode,
                        max_files_per_trigger=4, state_partitions=2, publish_hours=True)


def _records(path) -> list[dict]:
    """The request records of a file of either layout."""
    table = pq.read_table(path)
    return (materialize(table) if file_layout(table.column_names) == COMPACT_LAYOUT else table).to_pylist()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_hours_are_validated_and_published_in_order_and_a_failed_hour_blocks_the_later_ones(spark, tmp_path, capsys,
                                                                                            layout):
    """One stream over HOURS, with one request of the last hour also logged under another user:
    the hours before it pass the gate and are published, readable and verified; it fails
    (request_id_unique) and blocks the hours after it until an operator publishes it with a
    reason; then online training follows all the hours, scoring each before training on it."""
    from longseq.cli.main import main

    _landed(tmp_path, share_request_in_hour=HOURS[-1])
    logged: list[str] = []
    run_stream(spark, _config(tmp_path, layout=layout), log=logged.append)
    data = tmp_path / "data"
    blocked = HOURS[-1]
    assert published_hours(str(data)) == [(DAY, h) for h in range(blocked)]
    status = json.loads((data / "stream" / "status.json").read_text())
    assert status["blocked"]["hour"] == blocked and "request_id_unique" in status["blocked"]["problem"]
    assert any("hour publishing blocked" in m for m in logged)
    for h in HOURS[:-1]:
        outcome = json.loads((data / "validation" / f"ds={DAY}" / f"hour={h:02d}" / "requests.json").read_text())
        assert outcome["passed"]

    assert main(["publish", "--data", str(data), "--start", str(DAY), "--hour", str(blocked + 1),
                 "--override-validation", "wrong hour"]) == 1
    assert main(["publish", "--data", str(data), "--start", str(DAY), "--hour", str(blocked),
                 "--override-validation", "a logging bug upstream; the two requests are kept"]) == 0
    assert published_hours(str(data)) == [(DAY, h) for h in range(24)]
    manifest = json.loads((data / "published" / f"ds={DAY}" / f"hour={blocked:02d}" / "manifest.json").read_text())
    assert manifest["validation"] == "override" and "logging bug" in manifest["override_reason"]
    assert json.loads((data / "stream" / "status.json").read_text()) == {}
    assert f"published ds={DAY} hour={blocked + 1:02d}" in capsys.readouterr().out

    by_hour = {h: published_hour_files(str(data), DAY, h) for h in range(24)}
    assert {h for h, files in by_hour.items() if files} == set(HOURS)
    # the hours hold the day's records, each in the hour it was served
    hourly = [r for h in HOURS for f in by_hour[h] for r in _records(f.url.removeprefix("file://"))]
    day = _records(data / "requests" / f"ds={DAY}" / "part-00000.parquet")
    assert manifest["layout"] == layout
    key = lambda r: (r["user_id"], r["request_ts"], r["request_id"])  # noqa: E731
    assert sorted(hourly, key=key) == sorted(day, key=key) and day
    for h in HOURS:
        rows = [r["request_ts"] for r in _records(by_hour[h][0].url.removeprefix("file://"))]
        assert {(ts - day_start_ms(DAY)) // HOUR_MS for ts in rows} == {h}
    urls = [f.url for h in HOURS for f in by_hour[h]]
    assert verify_published(urls) > 0

    # stream -> hours published -> online training, each hour scored before it is trained on
    from longseq.trainer.follow import follow
    from longseq.trainer.train_config import TrainConfig

    run = tmp_path / "run"
    summary = follow(str(data), run, TrainConfig(preset="tiny", batch_size=8, device="cpu", warmup_steps=2),
                     log=lambda m: None, exit_when_idle_s=0, progressive=True)
    assert summary["hours_trained"] == 24 and summary["steps"] > 0
    assert sorted(p.name for p in (run / "progressive" / f"ds={DAY}").glob("*.json")) == \
        [f"hour={h:02d}.json" for h in HOURS]

    path = by_hour[HOURS[0]][0].url.removeprefix("file://")
    blob = bytearray(open(path, "rb").read())
    blob[len(blob) // 2] ^= 0xFF
    open(path, "wb").write(bytes(blob))
    with pytest.raises(PublishedDataError, match="does not match its manifest"):
        verify_published([by_hour[HOURS[0]][0].url])

    # an hour's manifest edited by hand (its file listed twice) is checked against the hour's record
    manifest_path = data / "published" / f"ds={DAY}" / f"hour={HOURS[1]:02d}" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"] *= 2
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(PublishedDataError, match="not the hour's as it closed"):
        published_hour_files(str(data), DAY, HOURS[1])
