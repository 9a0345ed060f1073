"""Generator throughput (events/s) and peak memory per profile, side by side in one run.

    longseq bench generate [--profile bench-1m,bench-10m] [--seed 0] [--work DIR]

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

from longseq.bench import bench_parser
from longseq.cli.arguments import add_spec, add_work

_CHILD = """
import datetime as dt, json, resource, sys, time
from pathlib import Path
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate
p = PROFILES[sys.argv[1]]
t = time.perf_counter()
r = generate(Path(sys.argv[2]), p, int(sys.argv[3]), SAMPLE_START, spec=sys.argv[4] or None)
secs = time.perf_counter() - t
print(json.dumps({"profile": p.name, "users": p.users, "days": p.days, "events": r.rows,
                  "seconds": secs, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_profile(profile: str, out: Path, seed: int, spec: Path | None = None) -> dict:
    res = subprocess.run([sys.executable, "-c", _CHILD, profile, str(out), str(seed), str(spec or "")],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"generate {profile} failed:\n{res.stderr[-2000:]}")
    row = json.loads(res.stdout.strip().splitlines()[-1])
    row["bytes"] = sum(f.stat().st_size for f in out.rglob("*.parquet"))
    return row


def arguments(ap: argparse.ArgumentParser) -> None:
    """The benchmark's flags (`longseq bench generate --help`)."""
    ap.add_argument("--profile", default="bench-1m,bench-10m", metavar="NAME[,NAME...]",
                    help="generator profiles to time, each in its own process (default bench-1m,bench-10m)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_spec(ap, "dataset spec whose shape the logs take (default: the default spec)")
    add_work(ap, None, "the generated data and outputs")


def main(argv: list[str]) -> int:
    ap = bench_parser('generate', __doc__, arguments)
    args = ap.parse_args(argv)
    from longseq.sources.generate import PROFILES

    unknown = [n for n in args.profile.split(",") if n not in PROFILES]
    if unknown:
        ap.error(f"unknown profile(s) {', '.join(unknown)}; choose from {', '.join(PROFILES)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="longseq-bench-gen-"))
    rows = []
    try:
        for name in args.profile.split(","):
            row = run_profile(name, work / name, args.seed, args.spec)
            rows.append(row)
            print(f"{name}: {row['events']:,} events in {row['seconds']:.1f} s", file=sys.stderr)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print("| profile | users x days | events | seconds | events/s | peak RSS (MB) | Parquet MB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['profile']} | {r['users']:,} x {r['days']} | {r['events']:,} | {r['seconds']:.1f} | "
            f"{r['events'] / r['seconds']:,.0f} | {r['peak_rss_mb']:,.0f} | {r['bytes'] / 2**20:,.0f} |"
        )
    return 0
