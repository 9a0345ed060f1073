"""Generator throughput (events/s) and peak memory per profile, side by side in one run.

    longseq bench generate [--profiles bench-1m,bench-10m] [--seed 0] [--workdir DIR]

Each profile runs in its own process, so its peak RSS is its own: bounded memory shows as
a peak that does not grow with the number of events.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import datetime as dt, json, resource, sys, time
from pathlib import Path
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate
p = PROFILES[sys.argv[1]]
t = time.perf_counter()
r = generate(Path(sys.argv[2]), p, int(sys.argv[3]), SAMPLE_START)
secs = time.perf_counter() - t
print(json.dumps({"profile": p.name, "users": p.users, "days": p.days, "events": r.rows,
                  "seconds": secs, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_profile(profile: str, out: Path, seed: int) -> dict:
    res = subprocess.run([sys.executable, "-c", _CHILD, profile, str(out), str(seed)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"generate {profile} failed:\n{res.stderr[-2000:]}")
    row = json.loads(res.stdout.strip().splitlines()[-1])
    row["bytes"] = sum(f.stat().st_size for f in out.rglob("*.parquet"))
    return row


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="longseq bench generate", description=__doc__.split("\n")[0])
    ap.add_argument("--profiles", default="bench-1m,bench-10m")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temp dir, removed)")
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="longseq-bench-gen-"))
    rows = []
    try:
        for name in args.profiles.split(","):
            row = run_profile(name, work / name, args.seed)
            rows.append(row)
            print(f"{name}: {row['events']:,} events in {row['seconds']:.1f} s", file=sys.stderr)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print("| profile | users x days | events | seconds | events/s | peak RSS (MB) | Parquet MB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['profile']} | {r['users']:,} x {r['days']} | {r['events']:,} | {r['seconds']:.1f} | "
            f"{r['events'] / r['seconds']:,.0f} | {r['peak_rss_mb']:,.0f} | {r['bytes'] / 2**20:,.0f} |"
        )
    return 0
