"""The settings of `longseq stream`, apart from the job so that the command line can show
their defaults without importing Spark.

`StreamSettings` is what decides the records (the spec, the history cap, the lateness
bound, the layout), the same things that decide a daily build's; the build config the stream
closes its days with is derived from it, in `build_config`, and nowhere else. `StreamConfig`
is where the stream reads and writes, and how it runs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from longseq.etl.batch.build import BuildConfig
from longseq.schemas.contracts import DEFAULT_LATENESS_MS, DEFAULT_LAYOUT, DEFAULT_MAX_LEN, DEFAULT_SPEC
from longseq.schemas.spec import DatasetSpec

MODES = ("continuous", "once", "available-now")


@dataclass(frozen=True)
class StreamSettings:
    # None: the spec the output records, else the default (the job resolves it before use)
    spec: DatasetSpec | None = DEFAULT_SPEC
    max_len: int = DEFAULT_MAX_LEN  # history events kept per request
    lateness_ms: int = DEFAULT_LATENESS_MS  # a request is decided this long after request_ts
    # how hours and days hold the records (schemas/contracts.py LAYOUTS); None: the checkpoint's,
    # else that of the day the stream starts after, else the default (the job resolves it)
    layout: str | None = DEFAULT_LAYOUT

    def build_config(self, raw: str, out: str, start: dt.date, end: dt.date | None = None) -> BuildConfig:
        """The daily build's config for the days the stream closes (or checks its state against)."""
        return BuildConfig(raw, out, start, end, self.max_len, lateness_ms=self.lateness_ms, spec=self.spec,
                           layout=self.layout)


@dataclass(frozen=True)
class StreamConfig:
    raw: str
    out: str
    checkpoint: str
    settings: StreamSettings = field(default_factory=lambda: StreamSettings(spec=None, layout=None))
    start: dt.date | None = None  # the first ds read; None: every partition
    watermark_delay_ms: int = 10 * 60_000  # how far out of event-time order files may land
    trigger: str = "1 minute"
    max_files_per_trigger: int = 1000
    mode: str = "continuous"
    state_partitions: int = 4  # pinned by the checkpoint
    publish_hours: bool = False  # validate and publish each hour as it closes (etl/stream/hours.py)
