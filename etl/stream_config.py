"""The settings of `longseq stream` (etl/stream.py), apart from the job so that the command
line can show their defaults without importing it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from longseq.schemas.contracts import DEFAULT_LATENESS_MS, DEFAULT_MAX_LEN
from longseq.schemas.spec import DatasetSpec

if TYPE_CHECKING:  # pragma: no cover
    from longseq.etl.stream_process import StreamSettings

MODES = ("continuous", "once", "available-now")


@dataclass(frozen=True)
class StreamConfig:
    raw: str
    out: str
    checkpoint: str
    start: dt.date | None = None  # the first ds read; None: every partition
    max_len: int = DEFAULT_MAX_LEN
    lateness_ms: int = DEFAULT_LATENESS_MS
    watermark_delay_ms: int = 10 * 60_000  # how far out of event-time order files may land
    trigger: str = "1 minute"
    max_files_per_trigger: int = 1000
    mode: str = "continuous"
    state_partitions: int = 4  # pinned by the checkpoint
    publish_hours: bool = False  # validate and publish each hour as it closes (etl/stream_hours.py)
    spec: DatasetSpec | None = None

    @property
    def settings(self) -> "StreamSettings":
        from longseq.etl.stream_process import StreamSettings

        return StreamSettings(spec=self.spec, max_len=self.max_len, lateness_ms=self.lateness_ms)
