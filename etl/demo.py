"""`longseq demo`: the whole pipeline on a generated sample, printing what each stage did.

Stage 1 (today): generate raw logs and summarise them. Later stages (build, validate,
publish, train) are appended here as they land.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.compute as pc

from etl.generate import PROFILES, generate
from etl.raw_logs import read_raw_partition
from schemas.contracts import TASKS

DEMO_START = dt.date(2026, 1, 1)


def summarize_raw(raw: Path, start: dt.date, days: int) -> list[str]:
    """A few lines about raw logs, read back through the contract check."""
    tables = [read_raw_partition(raw, start + dt.timedelta(days=d)) for d in range(days)]
    rows = sum(t.num_rows for t in tables)
    users = np.concatenate([t.column("user_id").drop_null().to_numpy() for t in tables])
    _, per_user = np.unique(users, return_counts=True)
    requests = sum(len(pc.unique(t.column("request_id"))) for t in tables)
    rates = {task: sum(pc.sum(pc.equal(t.column(task), 1)).as_py() or 0 for t in tables) / max(rows, 1) for task in TASKS}
    pct = np.percentile(per_user, [50, 90, 99]).astype(int) if len(per_user) else [0, 0, 0]
    return [
        f"raw logs: {rows:,} impressions, {requests:,} requests, {len(per_user):,} users over {days} days",
        f"  events per user: p50 {pct[0]:,}  p90 {pct[1]:,}  p99 {pct[2]:,}  max {per_user.max() if len(per_user) else 0:,}",
        "  label rates: " + "  ".join(f"{t} {r:.3f}" for t, r in rates.items()),
    ]


def run_demo(out: Path, seed: int = 0, profile: str = "small", progress: Callable[[str], None] = print) -> int:
    out = Path(out)
    raw = out / "raw"
    p = PROFILES[profile]
    progress(f"[1/1] generate: profile {profile}, {p.users} users, {p.days} days, seed {seed} -> {raw}")
    report = generate(raw, p, seed, DEMO_START, dirty=0.01, progress=progress)
    lines = summarize_raw(raw, DEMO_START, p.days)
    lines.append("  dirty rows (quarantined by the build): " + ", ".join(f"{k} {v}" for k, v in report.dirty.items()))
    print("\n".join(lines))
    return 0
