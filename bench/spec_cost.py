"""What the dataset spec costs on the default spec: the build and the readers of this tree
against an earlier commit's, side by side in one run (the goal: within 5%). It takes no
--spec: the baseline commit predates dataset specs, so only the default spec compares.

    longseq bench spec-cost [--baseline REV] [--candidate REV] [--work DIR] [--profile bench-1m]
                            [--days 4] [--max-len 2000] [--repeat 3] [--read-passes 3] [--only W,...]

Both commits are checked out once into WORK/baseline and WORK/candidate (git worktrees of
this repository; the candidate defaults to HEAD, so edits made while it runs do not leak
in), and both run from the same .venv: each workload is a fresh process with its tree
first on PYTHONPATH. Raw logs are generated once (the default spec's bytes do not depend
on the tree; the benchmark checks that both builds write the same records). Per round,
in alternating order (baseline first in odd rounds), each tree:
  build-polars   `longseq build --engine polars` of every day
  build-spark    `longseq build --engine spark --master local[2]` of every day
  publish        then, on the polars output, `longseq publish` (not timed)
  read-arrow     every published day with the pyarrow reader, scoring (file order, full length)
  read-petastorm the same with the Petastorm reader, training (shuffle + truncation)
A build's time is its process's wall time (imports and the Spark session included, the
same in both trees); a read's is the time of --read-passes passes over the days after one
warm-up pass, in the process. Each reported time is the median over rounds; the ratio is
the candidate's over the baseline's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from longseq.bench import bench_parser
from longseq.cli.arguments import add_master, add_work, positive_int
from longseq.sources import SAMPLE_START

REPO = Path(__file__).resolve().parents[1]
BASELINE = "8bce74c"  # main before the dataset spec existed
TREES = ("baseline", "candidate")
WORKLOADS = ("build-polars", "build-spark", "read-arrow", "read-petastorm")

_READ = """
import sys, time, datetime as dt, importlib
namespaced = sys.argv[9] == "namespaced"  # trees from before the longseq namespace import bare names
import os
def first(*names):  # the reader moved between trees: the first of its homes this tree has
    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            pass
    raise ModuleNotFoundError(names)
r = first("longseq.reader.readers", "longseq.trainer.reader") if namespaced else importlib.import_module("trainer.reader")
try:
    ReaderConfig = importlib.import_module("longseq.reader.steps" if namespaced else "trainer.reader_steps").ReaderConfig
except ModuleNotFoundError:
    ReaderConfig = r.ReaderConfig
LengthSampler = importlib.import_module(("longseq." if namespaced else "") + "features.lengths").LengthSampler
open_published = r.open_published
assert os.path.realpath(r.__file__).startswith(os.path.realpath(sys.argv[1])), r.__file__  # this tree's code
engine, data, start, end = sys.argv[2], sys.argv[3], dt.date.fromisoformat(sys.argv[4]), dt.date.fromisoformat(sys.argv[5])
cfg = ReaderConfig(shuffle=False) if engine == "arrow" else ReaderConfig(shuffle=True, truncation=LengthSampler(max_len=int(sys.argv[6])))
for _ in range(int(sys.argv[7])):  # a warm-up pass (page cache, checksums), then the timed ones
    tokens = sum(b.num_history_tokens for b in open_published(data, start, end, cfg, engine=engine).batches())
t = time.perf_counter()
for _ in range(int(sys.argv[8])):
    tokens = sum(b.num_history_tokens for b in open_published(data, start, end, cfg, engine=engine).batches())
print(time.perf_counter() - t)
"""


def _namespaced(tree: Path) -> bool:
    """Whether the tree installs under the longseq namespace (newer trees) or by bare names."""
    return '"longseq" = "."' in (tree / "pyproject.toml").read_text()


def _env(tree: Path) -> dict[str, str]:
    """PYTHONPATH that makes this tree's code the one imported: the tree itself, and for a
    namespaced tree a folder whose `longseq` links to it, ahead of the installed checkout."""
    paths = [str(tree)]
    if _namespaced(tree):
        link = tree.parent / f".{tree.name}-namespace" / "longseq"
        link.parent.mkdir(exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(tree, target_is_directory=True)
        paths.insert(0, str(link.parent))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _run(argv: list[str], tree: Path) -> str:
    done = subprocess.run(argv, cwd=tree, env=_env(tree), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed in {tree}: {' '.join(argv)}\n{done.stderr[-3000:]}")
    return done.stdout


def _timed(argv: list[str], tree: Path) -> float:
    t = time.perf_counter()
    _run(argv, tree)
    return time.perf_counter() - t


def _longseq(tree: Path, *args: object) -> list[str]:
    module = "longseq.cli.main" if _namespaced(tree) else "cli.main"
    return [sys.executable, "-m", module, *map(str, args)]


def _records_digest(data: Path) -> str:
    h = hashlib.sha256()
    for f in sorted((data / "requests").rglob("*.parquet")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _worktree(work: Path, name: str, rev: str) -> Path:
    """WORK/name checked out at rev (moved there if it holds another commit)."""
    tree = work / name
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", rev], check=True, capture_output=True,
                            text=True).stdout.strip()
    if not (tree / "cli").exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--force", "--detach", str(tree), commit],
                       check=True, capture_output=True)
    else:
        subprocess.run(["git", "-C", str(tree), "checkout", "--quiet", "--detach", commit], check=True)
    return tree


def arguments(ap: argparse.ArgumentParser) -> None:
    """The benchmark's flags (`longseq bench spec-cost --help`)."""
    ap.add_argument("--baseline", default=BASELINE, metavar="COMMIT", help=f"the commit to compare with (default {BASELINE})")
    ap.add_argument("--candidate", default="HEAD", metavar="COMMIT", help="the commit measured against it (default HEAD)")
    add_work(ap, "bench-work/spec-cost", "the two trees, the generated logs and their builds, kept between runs")
    ap.add_argument("--profile", default="bench-1m", help="generator profile of the logs (default bench-1m)")
    ap.add_argument("--days", type=positive_int, default=4, help="days of logs (default 4)")
    ap.add_argument("--max-len", type=positive_int, default=2_000, metavar="EVENTS",
                    help="history events the builds keep per request (default 2000)")
    ap.add_argument("--repeat", type=positive_int, default=3, help="alternating rounds; medians are reported (default 3)")
    ap.add_argument("--read-passes", type=positive_int, default=3, help="timed passes of each read (default 3)")
    ap.add_argument("--only", default=",".join(WORKLOADS), help=f"workloads to time (default all: {','.join(WORKLOADS)})")
    add_master(ap)

def main(argv: list[str]) -> int:
    ap = bench_parser('spec-cost', __doc__, arguments)
    args = ap.parse_args(argv)
    only = [w for w in WORKLOADS if w in args.only.split(",")]

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    trees = {"baseline": _worktree(work, "baseline", args.baseline), "candidate": _worktree(work, "candidate", args.candidate)}
    start, end = SAMPLE_START, SAMPLE_START + dt.timedelta(days=args.days - 1)
    raw = work / "raw"
    if not (raw / f"ds={end}" / "_SUCCESS").exists():
        _timed(_longseq(trees["baseline"], "generate", "--raw", raw, "--profile", args.profile, "--days", args.days),
               trees["baseline"])
    times: dict[tuple[str, str], list[float]] = {}
    digests: dict[str, str] = {}
    for round_ in range(args.repeat):
        order = TREES if round_ % 2 == 0 else TREES[::-1]
        for name in order:
            tree = trees[name]
            for engine in ("polars", "spark"):
                out = work / f"{name}-{engine}"
                if f"build-{engine}" not in only and (engine == "spark" or (out / "published").exists()):
                    continue  # not timed, and the reads have their data
                shutil.rmtree(out, ignore_errors=True)
                spark = ["--master", args.master] if engine == "spark" else []
                seconds = _timed(_longseq(tree, "build", "--engine", engine, "--raw", raw, "--data", out, "--start", start,
                                          "--end", end, "--max-len", args.max_len, *spark), tree)
                times.setdefault((name, f"build-{engine}"), []).append(seconds)
            data = work / f"{name}-polars"
            digests[name] = _records_digest(data)
            if not (data / "published" / f"ds={end}" / "manifest.json").exists():
                _run(_longseq(tree, "publish", "--data", data, "--start", start, "--end", end,
                              "--override-validation", "benchmark data"), tree)
            for engine in ("arrow", "petastorm"):
                if f"read-{engine}" in only:
                    seconds = float(_run([sys.executable, "-c", _READ, str(tree), engine, str(data), str(start),
                                          str(end), str(args.max_len), "1", str(args.read_passes),
                                          "namespaced" if _namespaced(tree) else "bare"], tree).split()[-1])
                    times.setdefault((name, f"read-{engine}"), []).append(seconds)
            print(f"round {round_ + 1} {name}: " + ", ".join(f"{w} {times[(name, w)][-1]:.2f} s" for w in only),
                  file=sys.stderr, flush=True)
    same = digests["baseline"] == digests["candidate"]
    if not same:
        print(f"warning: the trees wrote different records ({digests})", file=sys.stderr)
    print(f"\nprofile {args.profile}, {args.days} days, max_len {args.max_len}, baseline {args.baseline}, candidate "
          f"{args.candidate}, median of {args.repeat} alternating rounds; polars records identical: {same}\n")
    print("| workload | baseline s | candidate s | candidate / baseline |")
    print("|---|---:|---:|---:|")
    for w in only:
        b, c = statistics.median(times[("baseline", w)]), statistics.median(times[("candidate", w)])
        print(f"| {w} | {b:.2f} | {c:.2f} | {c / b:.3f} |")
    return 0
