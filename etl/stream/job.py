"""`longseq stream`: raw impression files -> request records within minutes, with Spark
Structured Streaming (docs/STREAMING.md; the design and the facts about pyspark 3.5 it rests
on: docs/plans/STREAMING_DESIGN.md).

    RAW/ds=D/*.parquet (files landing)   CKPT/control/ (the flush marker of --once)
        \\__________________ union ___________________/
                              |  row rules of each row's ds (etl/batch/row_rules.py), values
                              |  (etl/batch/feature_values.py), event-time watermark
                              v
        groupBy(user).applyInPandasWithState(etl/stream/process.py), event-time timeouts,
        state = one Arrow blob per user in the RocksDB state store
                              |
                              v
        foreachBatch: etl/stream/sink.py (exactly once; days close as daily builds)

Rows that break a rule go through the same operator under a few negative keys, since Spark
3.5 allows one stateful operator per query. The watermark is computed on the valid rows'
event_ts; Spark would silently drop rows older than it, so the operator sees a constant
column in its place, and late rows reach `process`, which quarantines them (late_arrival).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pyarrow as pa

from longseq.dataset.layout import BuildLayout, StreamLayout
from longseq.dataset.output_lock import output_lock
from longseq.dataset.parquet_files import FileTypes, read_arrow, spark_columns, spark_file_schema
from longseq.dataset.spec_record import check_output_spec, record_spec, recorded_spec, spec_warnings
from longseq.etl.batch.build import chain_layout, check_state_checksums, check_state_fits
from longseq.dataset.storage import LocalStorage, absolute, is_local
from longseq.etl.batch.feature_values import spark_value_ops
from longseq.etl.batch.row_rules import reason_expr, spark_ops
from longseq.etl.stream.landed import LandedFiles
from longseq.etl.stream.settings import MODES, StreamConfig, StreamSettings
from longseq.etl.stream.sink import checkpoint_id
from longseq.etl.stream.process import FAR_MS, process, value_columns
from longseq.etl.stream.state import (
    EPOCH, VALUE_PREFIX, StreamState, from_user_state, ipc_bytes, pending_schema, read_ipc, value_names,
)
from longseq.schemas.contracts import DEFAULT_LAYOUT, REQUEST_LAYOUT, contracts_of
from longseq.schemas.errors import LongseqError, MissingPrerequisiteError
from longseq.schemas.forms import arrow_type, to_arrow
from longseq.schemas.spec import DatasetSpec

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

FLUSH_KEY = 0  # user ids are > 0 (nonpositive_id); invalid rows use -1 .. -INVALID_KEYS
INVALID_KEYS = 8
BAD_ROW = "_bad_row"
INIT = "_init"  # a control row's USER_STATE row (Arrow IPC): the user's state after a built day
# No int64 column: the rows Spark adds to pad an Arrow batch are nulls, which pandas turns
# into float64, which cannot hold every int64.
OUT_SCHEMA = "kind string, ds int, hour int, rows int, payload binary, counts string"
OUT_COLUMNS = ["kind", "ds", "hour", "rows", "payload", "counts"]
STATE_SCHEMA = "version int, blob binary"


# ---------------------------------------------------------------- the state function (runs in the executors)


def state_function(settings: StreamSettings) -> Callable:
    """The function Spark calls per user and micro-batch: `process` on the user's rows."""
    import pandas as pd

    spec = settings.spec
    c = contracts_of(spec)
    pending = pending_schema(spec)
    quarantine = pa.schema([*to_arrow(c.quarantine), pa.field("ds", pa.int32())])
    records = to_arrow(c.request_record)
    user_state = to_arrow(c.user_state)
    as_text = exact_as_text(spec)

    def out(kind: str, ds: int, hour: int, rows: int, payload: bytes | None, counts: dict | None) -> dict:
        return {"kind": kind, "ds": ds, "hour": hour, "rows": rows, "payload": payload,
                "counts": None if counts is None else json.dumps(counts, sort_keys=True)}

    def fn(key: tuple, frames: Iterator[Any], state: Any) -> Iterator[Any]:
        user = int(key[0])
        frame = pd.concat(list(frames), ignore_index=True)
        wm = state.getCurrentWatermarkMs()
        _probe()
        if user == FLUSH_KEY:
            yield pd.DataFrame([out("count", -1, -1, 0, None, {"watermark": wm})], columns=OUT_COLUMNS)
            return
        starts = frame[frame[INIT].notna()]  # control rows: where a stream starts from a daily build
        frame = frame[frame[INIT].isna()]
        rows_read = frame["ds"].value_counts().to_dict()
        result = [out("count", int(d), -1, 0, None, {"rows_read": int(n)}) for d, n in sorted(rows_read.items())]
        if user < 0:  # rows that broke a rule: quarantined as they were read (exactly: from JSON)
            bad = [{**json.loads(row), "reason": reason, "ds": int(d)}
                   for row, reason, d in zip(frame[BAD_ROW], frame["reason"], frame["ds"])]
            table = pa.Table.from_pylist(bad, schema=quarantine)
            for d in sorted(rows_read):
                part = table.filter(pa.compute.equal(table.column("ds"), d)).drop_columns(["ds"])
                result.append(out("quarantine", int(d), -1, part.num_rows, ipc_bytes(part), None))
        else:
            old = StreamState.decode(state.get[1], spec) if state.exists else None
            if len(starts):
                if old is not None or len(starts) > 1:
                    raise RuntimeError(f"user {user}: a start state arrived for a user the stream already has")
                day = EPOCH + dt.timedelta(days=int(starts["ds"].iloc[0]))
                old = from_user_state(read_ipc(starts[INIT].iloc[0]).to_pylist()[0], day, spec)
            rows = [] if state.hasTimedOut or not len(frame) else _valid_rows(frame, pending, as_text)
            call = process(user, old, rows, wm, settings)
            result += _call_rows(call, out, records, quarantine, user_state)
            if call.state is None:
                state.remove()
            else:
                blob = call.state.encode()
                state.update((1, blob))
                result.append(out("count", -1, -1, 0, None, {"state_bytes": len(blob), "watermark": wm}))
            if call.timeout is not None:
                state.setTimeoutTimestamp(call.timeout)
        yield pd.DataFrame(result, columns=OUT_COLUMNS)

    return fn


def exact_as_text(spec: DatasetSpec) -> tuple[str, ...]:
    """The int64 columns a valid row may leave null (optional inputs): pandas would hold them
    as float64, so they cross into the state function as text."""
    raw = contracts_of(spec).raw_log
    return tuple(f.name for f in raw if not f.required and to_arrow(raw).field(f.name).type == pa.int64())


def _valid_rows(frame: Any, schema: pa.Schema, as_text: tuple[str, ...]) -> list[dict]:
    columns = {}
    for name in schema.names:
        values = frame[name]
        if name in as_text:
            columns[name] = pa.array(values.where(values.notna(), None), pa.string()).cast(pa.int64())
        else:
            columns[name] = pa.Array.from_pandas(values, type=schema.field(name).type)
    return pa.Table.from_pydict(columns, schema=schema).to_pylist()


def _call_rows(call: Any, out: Callable, records: pa.Schema, quarantine: pa.Schema,
               user_state: pa.Schema) -> list[dict]:
    rows: list[dict] = []
    by_hour: dict[tuple[int, int], list[dict]] = {}
    for rec in call.records:
        hour = (rec["request_ts"] // 3_600_000) % 24
        by_hour.setdefault((rec["ds"], hour), []).append(rec)
    for (d, hour), recs in sorted(by_hour.items()):
        rows.append(out("record", d, hour, len(recs), ipc_bytes(pa.Table.from_pylist(recs, schema=records)), None))
    by_day: dict[int, list[dict]] = {}
    for q in call.quarantine:
        by_day.setdefault(q["ds"], []).append(q)
    for d, qs in sorted(by_day.items()):
        table = pa.Table.from_pylist(qs, schema=quarantine).drop_columns(["ds"])
        rows.append(out("quarantine", d, -1, len(qs), ipc_bytes(table), None))
    for d, snapshot in call.snapshots:
        rows.append(out("snapshot", d, -1, 1, ipc_bytes(pa.Table.from_pylist([snapshot], schema=user_state)), None))
    for d, counts in sorted(call.counts.items()):
        if any(counts.values()):
            rows.append(out("count", d, -1, 0, None, dict(counts)))
    return rows


def _probe() -> None:
    """Where this Python worker runs, once per process, when LONGSEQ_STREAM_PROBE names a
    directory: the cluster test's proof that executors run the project's interpreter."""
    where = os.environ.get("LONGSEQ_STREAM_PROBE")
    if not where or getattr(_probe, "done", False):
        return
    _probe.done = True  # type: ignore[attr-defined]
    Path(where).mkdir(parents=True, exist_ok=True)
    Path(where, f"probe-{os.getpid()}.json").write_text(json.dumps(
        {"executable": sys.executable, "prefix": sys.prefix, "cwd": os.getcwd(), "ppid": os.getppid()}))


# ---------------------------------------------------------------- the query (driver)


def stream_rows(spark: "SparkSession", config: StreamConfig, control_dir: str,
                file_types: FileTypes | None = None) -> "DataFrame":
    """The union of the raw files and the control files, each row with its reason, values,
    the operator's key and the watermark column, as the state function takes them. The raw
    files are read with their columns' `file_types` (LandedFiles.file_types; the contract's
    if None), then renamed and converted to the contract's."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import BinaryType, StringType, StructField, StructType

    spec = config.settings.spec
    c = contracts_of(spec)
    contract_types = {f.name: arrow_type(f.dtype) for f in c.raw_log}

    def source(path: str, types: FileTypes, extra: list[StructField]) -> "DataFrame":
        # the file source puts the partition column ds last, and so must the schema it is given
        schema = StructType([*spark_file_schema(c.raw_log, spec.raw_names, types).fields, *extra,
                             StructField("ds", StringType())])
        frame = (spark.readStream.schema(schema).option("maxFilesPerTrigger", config.max_files_per_trigger)
                 .option("maxFileAge", "36500d").parquet(path))
        return frame.select(*spark_columns(c.raw_log, spec.raw_names, types), *[f.name for f in extra], "ds")

    raw = source(config.raw, file_types or contract_types, []).withColumns(
        {INIT: F.lit(None).cast("binary"), "_flush": F.lit(False)})
    if config.start is not None:
        raw = raw.where(F.col("ds") >= F.lit(config.start.isoformat()))
    # control rows: a daily build's USER_STATE row per user to start from (INIT), or the flush marker
    # control files are written with the contract's types, under the logs' names
    control = source(control_dir, contract_types, [StructField(INIT, BinaryType())]).withColumn(
        "_flush", F.col(INIT).isNull())
    rows = raw.unionByName(control)
    day_start = F.unix_millis(F.to_timestamp(F.col("ds"), "yyyy-MM-dd"))
    rows = rows.withColumn("reason", reason_expr(spark_ops(day_start, config.settings.lateness_ms), spec))
    init = F.col(INIT).isNotNull()
    valid = F.col("reason").isNull() & ~F.col("_flush") & ~init
    values = value_columns(spec, spark_value_ops())
    rows = rows.withColumns({name: F.when(valid, expr) for name, expr in values.items()})
    invalid_key = -1 - F.pmod(F.xxhash64(*[F.col(n) for n in c.raw_log.names]), F.lit(INVALID_KEYS))
    rows = rows.withColumns({
        "ds": F.datediff(F.to_date(F.col("ds")), F.lit("1970-01-01")).cast("int"),
        "_key": F.when(F.col("_flush"), F.lit(FLUSH_KEY).cast("long")).when(valid | init, F.col("user_id"))
                 .otherwise(invalid_key.cast("long")),
        "_wm": F.timestamp_millis(F.when(valid | F.col("_flush"), F.col("event_ts")).otherwise(F.lit(0))),
    })
    delay = config.watermark_delay_ms
    rows = rows.withWatermark("_wm", f"{delay} milliseconds")
    # Spark would drop rows below the watermark before the operator sees them: give it a
    # constant instead, with the watermark's metadata, so that `process` quarantines them
    # a row that broke a rule may hold nulls anywhere: it crosses as JSON, which keeps int64 exact
    bad_row = F.when(~valid & ~F.col("_flush") & ~init, F.to_json(F.struct(*[F.col(n) for n in c.raw_log.names])))
    raw_columns = [F.col(n).cast("string").alias(n) if n in exact_as_text(spec) else F.col(n) for n in c.raw_log.names]
    return rows.select(*raw_columns, "ds", *[VALUE_PREFIX + n for n in value_names(spec)], "reason", "_key",
                       bad_row.alias(BAD_ROW), INIT,
                       F.timestamp_millis(F.lit(FAR_MS)).alias("_wm", metadata={"spark.watermarkDelayMs": delay}))


def stream_query(spark: "SparkSession", config: StreamConfig, control_dir: str,
                 file_types: FileTypes | None = None) -> "DataFrame":
    from pyspark.sql.streaming.state import GroupStateTimeout

    rows = stream_rows(spark, config, control_dir, file_types)
    return rows.groupBy("_key").applyInPandasWithState(state_function(config.settings), OUT_SCHEMA, STATE_SCHEMA,
                                                       "append", GroupStateTimeout.EventTimeTimeout)


# ---------------------------------------------------------------- running it


SPARK_STREAM_CONF = {
    "spark.sql.streaming.stateStore.providerClass":
        "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
    # the state function's output is flushed with the state rows per Arrow batch: records
    # of 10k-event histories are ~280 KB each
    "spark.sql.execution.arrow.maxRecordsPerBatch": "128",
}
PINNED = ("spec", "max_len", "lateness_ms", "layout", "watermark_delay_ms", "state_partitions", "start", "raw", "out")


def _pinned(config: StreamConfig) -> dict:
    return {"spec": config.settings.spec.fingerprint, "max_len": config.settings.max_len, "lateness_ms": config.settings.lateness_ms,
            "layout": config.settings.layout,
            "watermark_delay_ms": config.watermark_delay_ms, "state_partitions": config.state_partitions,
            "start": None if config.start is None else config.start.isoformat(), "raw": config.raw, "out": config.out}


def _check_checkpoint(config: StreamConfig, meta: Path) -> None:
    """A checkpoint belongs to one stream: the settings its state was built with stay (a new
    one's are written by `_pin_checkpoint`, once every check passed)."""
    if (meta / "ended.json").exists():
        raise LongseqError(f"the stream of checkpoint {config.checkpoint} has ended (--once flushed it); continue "
                           f"with daily builds (longseq build --start NEXT_DAY), or start a new checkpoint")
    pinned = meta / "stream.json"
    if pinned.exists():
        before = {"layout": REQUEST_LAYOUT, **json.loads(pinned.read_text())}  # pinned before there were layouts
        now = _pinned(config)
        changed = [k for k in PINNED if not _same_setting(k, before.get(k), now[k])]
        if changed:
            k = changed[0]
            raise LongseqError(f"checkpoint {config.checkpoint} was started with {k}={before.get(k)!r}, not "
                               f"{now[k]!r}: keep its settings, or start a new checkpoint")


def _resolved_layout(config: StreamConfig, meta: Path, fresh: bool, start_state: dt.date | None) -> str:
    """The layout a stream told none writes: the checkpoint's, else that of the day it starts
    after (daily -> stream goes on as built), else the default."""
    if not fresh:
        return json.loads((meta / "stream.json").read_text()).get("layout", REQUEST_LAYOUT)
    if start_state is not None:
        return chain_layout(LocalStorage(), BuildLayout(config.out), start_state + dt.timedelta(days=1))
    return DEFAULT_LAYOUT


def _same_setting(key: str, before: object, now: object) -> bool:
    """Equal settings; a local raw or output directory is the same one by another path (a
    symlink, `..`) when both resolve to one real directory."""
    if key in ("raw", "out") and isinstance(before, str) and isinstance(now, str) and is_local(before) and is_local(now):
        return os.path.realpath(before) == os.path.realpath(now)
    return before == now


def _pin_checkpoint(config: StreamConfig, meta: Path) -> None:
    pinned = meta / "stream.json"
    if not pinned.exists():
        meta.mkdir(parents=True, exist_ok=True)
        pinned.write_text(json.dumps(_pinned(config), indent=1, sort_keys=True))


def _check_commits(config: StreamConfig, spark_checkpoint: str, log: Callable[[str], None]) -> None:
    """The stream's commit records in DATA belong to one checkpoint: a new checkpoint numbers
    its micro-batches from 0 again, so another's records would pass its batches for committed.
    Refused, saying how to go on; on a new checkpoint with none, the micro-batch files left
    by an earlier stream for days not built (never committed by this one) are removed."""
    stream = StreamLayout(config.out)
    directory = Path(stream.root, "commits")
    ours = checkpoint_id(spark_checkpoint)
    records = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))] if directory.exists() else []
    # a record without an id is from before ids: its checkpoint's, when that checkpoint exists
    foreign = records if ours is None else [r for r in records if r.get("checkpoint", ours) != ours]
    if foreign:
        batches = sorted(r["batch"] for r in foreign)
        where = {r.get("checkpoint_location") for r in foreign} - {None}
        owner = f"checkpoint {Path(sorted(where)[0]).parent}" if where else "another checkpoint"
        prev = None if config.start is None else config.start - dt.timedelta(days=1)
        built = prev is not None and BuildLayout(config.out).is_current(LocalStorage(), prev)
        then = f"from the state after {prev}, the last built day" if built else "from empty histories (a cold start)"
        raise LongseqError(
            f"{directory} holds micro-batches {batches[0]}..{batches[-1]} of {owner}, not of {config.checkpoint}: "
            f"restart with that checkpoint; if it is lost, move {directory} aside (mv {directory} {directory}.lost) "
            f"and start again: the stream then goes on {then}")
    if ours is not None or records:
        return
    layout, storage = BuildLayout(config.out), LocalStorage()
    leftovers = [Path(stream.root, "records"), Path(stream.root, "staging")] + [
        d for kind in ("quarantine", "snapshots") for d in sorted(Path(stream.root, kind).glob("ds=*"))
        if not layout.is_built(storage, dt.date.fromisoformat(d.name.split("=", 1)[1]))]
    leftovers = [d for d in leftovers if d.exists()]
    for d in leftovers:
        shutil.rmtree(d)
    if leftovers:
        log(f"removed the uncommitted micro-batch files of an earlier stream ({len(leftovers)} directories under "
            f"{stream.root}): a new checkpoint writes them again")


def _start_state(config: StreamConfig) -> dt.date | None:
    """The built day whose state the stream starts from: the day before --start when it is
    built and current, or without --start the last current day of DATA; None: a cold start."""
    storage, layout = LocalStorage(), BuildLayout(config.out)
    if config.start is not None:
        prev = config.start - dt.timedelta(days=1)
        return prev if layout.is_current(storage, prev) else None
    current = [d for d in layout.built_days(storage) if layout.is_current(storage, d)]
    return current[-1] if current else None


def _check_data(config: StreamConfig, spark_checkpoint: str) -> None:
    """The stream writes days a daily build would: none may be built by anyone else (a daily
    build, a stream of another checkpoint) from its first day on, and the day before it must
    be current when any earlier day is built (its users' histories go on from there)."""
    storage, layout = LocalStorage(), BuildLayout(config.out)
    built = layout.built_days(storage)
    checkpoint = checkpoint_id(spark_checkpoint)

    def closed_by_us(d: dt.date) -> bool:
        if checkpoint is None or json.loads(storage.read_text(layout.report(d))).get("engine") != "stream":
            return False
        marker = Path(layout.report(d)).with_name("stream.json")  # etl/stream/sink.py close_day
        return not marker.exists() or json.loads(marker.read_text()).get("checkpoint", checkpoint) == checkpoint

    first = config.start
    others = [d for d in built if (first is None or d >= first) and not closed_by_us(d)]
    if others:
        raise LongseqError(f"{config.out} has days built by a daily build or another stream checkpoint "
                           f"({others[0]}..{others[-1]}) where the "
                           f"stream would write: stream into another --data directory, or --start after them")
    before = [d for d in built if first is not None and d < first]
    if before and not layout.is_current(storage, first - dt.timedelta(days=1)):
        raise LongseqError(f"{config.out} has days built before --start {first} ({before[-1]} last) but not the "
                           f"day before it, current: --start {before[-1] + dt.timedelta(days=1)} to go on from its "
                           f"state, or build the days in between first")
    if before:
        check_state_fits(storage, layout, first - dt.timedelta(days=1),
                         config.settings.build_config(config.raw, config.out, first))


def _write_start_states(config: StreamConfig, day: dt.date, control: Path) -> int:
    """One control row per user of DATA's state after `day`, carrying its USER_STATE row: the
    stream's first micro-batch starts each user from it (pyspark 3.5 has no initial state for
    applyInPandasWithState). Returns the users."""
    import pyarrow.parquet as pq

    spec = config.settings.spec
    c = contracts_of(spec)
    check_state_checksums(LocalStorage(), BuildLayout(config.out), day, day)  # as a daily build reading it does
    states = read_arrow(BuildLayout(config.out).dir("state", day), c.user_state)
    raw = to_arrow(c.raw_log)
    schema = pa.schema([pa.field(spec.raw_names.get(f.name, f.name), f.type) for f in raw]
                       + [pa.field(INIT, pa.binary())])
    part = control / f"ds={day.isoformat()}"
    part.mkdir(parents=True, exist_ok=True)
    users = states.column("user_id")
    blobs = [ipc_bytes(states.slice(i, 1)) for i in range(states.num_rows)]
    # zeros, not nulls: a control row reaches the state function in its user's frame, and a
    # null would make pandas hold that user's int64 columns as float64
    columns = {f.name: pa.array([0] * states.num_rows).cast(f.type) if pa.types.is_integer(f.type)
               else pa.nulls(states.num_rows, f.type) for f in schema}
    columns[spec.raw_names.get("user_id", "user_id")] = users
    columns[INIT] = pa.array(blobs, pa.binary())
    pq.write_table(pa.table(columns, schema=schema), part / ".init.parquet")
    os.replace(part / ".init.parquet", part / "init.parquet")
    return states.num_rows


def _write_flush_marker(config: StreamConfig, control: Path) -> None:
    """One row with a far-future event_ts: once the watermark passes everything, every
    request still waiting is decided and every day closes."""
    from longseq.schemas.forms import to_arrow as arrow_of

    spec = config.settings.spec
    schema = arrow_of(contracts_of(spec).raw_log)
    row = {name: None for name in schema.names} | {"event_ts": FAR_MS}
    table = pa.Table.from_pylist([row], schema=schema)
    table = table.rename_columns([spec.raw_names.get(n, n) for n in table.column_names])
    part = control / "ds=9999-12-31"
    part.mkdir(parents=True, exist_ok=True)
    import pyarrow.parquet as pq

    pq.write_table(table, part / ".flush.parquet")
    os.replace(part / ".flush.parquet", part / "flush.parquet")


def run_stream(spark: "SparkSession", config: StreamConfig, log: Callable[[str], None] = print) -> dict:
    """Run the stream until it ends (--once, --available-now) or is stopped (SIGTERM,
    SIGINT); return a summary. Holds the output's lock throughout."""
    from longseq.etl.stream.sink import StreamSink

    if config.mode not in MODES:
        raise LongseqError(f"unknown stream mode {config.mode!r}: one of {', '.join(MODES)}")
    config = dataclasses.replace(config, raw=absolute(config.raw), out=absolute(config.out),
                                 checkpoint=absolute(config.checkpoint))
    if not os.path.isdir(config.raw):
        raise MissingPrerequisiteError(f"raw directory {config.raw} does not exist: create it (the shipper lands "
                                       f"files in ds=YYYY-MM-DD/ under it), then start the stream")
    with output_lock(config.out, "stream", log=log):
        if config.settings.spec is None:
            settings = dataclasses.replace(config.settings, spec=recorded_spec(LocalStorage(), config.out))
            config = dataclasses.replace(config, settings=settings)
        recorded = check_output_spec(LocalStorage(), config.out, config.settings.spec)
        for warning in spec_warnings(recorded, config.settings.spec, config.out):
            log(warning)
        meta = Path(config.checkpoint, "_longseq")
        fresh = not (meta / "stream.json").exists()
        start_state = _start_state(config) if fresh else None
        if not fresh and config.start is None:  # a restart goes on where the first run started
            pinned = json.loads((meta / "stream.json").read_text()).get("start")
            config = dataclasses.replace(config, start=pinned and dt.date.fromisoformat(pinned))
        if start_state is not None and config.start is None:
            config = dataclasses.replace(config, start=start_state + dt.timedelta(days=1))
        if config.settings.layout is None:
            config = dataclasses.replace(config, settings=dataclasses.replace(
                config.settings, layout=_resolved_layout(config, meta, fresh, start_state)))
        spark_checkpoint = str(Path(config.checkpoint, "spark"))
        # every check before the checkpoint is pinned: a refused new checkpoint stays new
        _check_checkpoint(config, meta)
        _check_data(config, spark_checkpoint)
        _check_commits(config, spark_checkpoint, log)
        landed = LandedFiles(config.raw, config.settings.spec, config.start, str(meta / "checked-files.tsv"))
        landed.check()
        record_spec(LocalStorage(), config.out, config.settings.spec)
        control = Path(config.checkpoint, "control")
        if start_state is not None and not (meta / "init.json").exists():
            users = _write_start_states(config, start_state, control)
            (meta / "init.json").write_text(json.dumps({"state": start_state.isoformat(), "users": users}))
            log(f"the stream starts from the state after {start_state} ({users:,} users)")
        elif fresh:
            log(f"the stream starts from empty histories (a cold start) at {config.start or 'the first ds it reads'}")
        _pin_checkpoint(config, meta)
        for key, value in {**SPARK_STREAM_CONF, "spark.sql.shuffle.partitions": str(config.state_partitions)}.items():
            spark.conf.set(key, value)
        control.mkdir(parents=True, exist_ok=True)
        sink = StreamSink(config.raw, config.out, spark_checkpoint, config.settings, log=log,
                          publish_hours=config.publish_hours, landed=landed)
        query = stream_query(spark, config, str(control), landed.file_types())

        def start(available_now: bool) -> Any:
            writer = query.writeStream.foreachBatch(sink).option("checkpointLocation", spark_checkpoint)
            writer = writer.trigger(availableNow=True) if available_now else writer.trigger(processingTime=config.trigger)
            return writer.start()

        t0 = time.perf_counter()
        try:
            if config.mode == "continuous":
                _run_until_signalled(start(False), log)
            else:
                start(True).awaitTermination()
                if config.mode == "once":
                    if not (meta / "flush.json").exists():
                        _write_flush_marker(config, control)
                        (meta / "flush.json").write_text(json.dumps({"flushed_at": time.time()}))
                    start(True).awaitTermination()
                    (meta / "ended.json").write_text(json.dumps({"ended_at": time.time(), "batches": sink.batches}))
        except Exception:
            if sink.failure is not None:  # the sink stopped the query and says why, in one line
                raise sink.failure from None
            raise
        commits = sink.commits()
        return {"batches": len(commits), "watermark": commits[-1]["watermark"] if commits else None,
                "closed_days": [d.isoformat() for d in BuildLayout(config.out).built_days(LocalStorage())],
                "seconds": round(time.perf_counter() - t0, 3)}


def _run_until_signalled(query: Any, log: Callable[[str], None]) -> None:
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.is_set() and query.isActive:
            query.awaitTermination(1)
        if query.isActive:
            log("stopping the stream (signal): the micro-batch in flight finishes or is replayed at the next start")
            query.stop()
        if query.exception() is not None:
            raise LongseqError(f"the stream failed: {query.exception()}")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
