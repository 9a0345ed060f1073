"""Reader throughput: published records -> RequestBatch, against a plain pyarrow floor.

    longseq bench reader [--work DIR] [--days N] [--repeat 3]

Prepares (once, kept in --work) the bench-1m profile built by the polars engine at
max_len 2,000 and 10,000 and published (validation overridden: generated benchmark data),
then reads its last --days days with each reader setting, each in a fresh process (so
that peak RSS is per setting), in alternating rounds; prints medians. The floor reads the
same row groups with pyarrow on one thread and hands flat values and offsets to torch,
with no shuffling, batching or checks.

The readers check the files' SHA-256 against their manifests when they open them, once
per process (dataset.published.verify_published). Each reader setting times that check
on its own first (its fresh process has hashed nothing yet; the page cache is warm, as
for the read), then the read, whose check is then a cache hit: the table gives both, and
requests/s with the check included.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from longseq.sources import SAMPLE_START
from longseq.bench import bench_parser
from longseq.cli.arguments import add_spec, add_work, dataset_spec, positive_int
from longseq.reader.readers import data_spec
from longseq.schemas.contracts import DEFAULT_SPEC

PROFILE = "bench-1m"
START = SAMPLE_START
MAX_LENS = (2_000, 10_000)

# name -> (engine, ReaderConfig overrides); "floor" and "baseline" are special
SETTINGS: dict[str, tuple[str, dict]] = {
    "baseline": ("", {}),  # imports only: the RSS every setting starts from
    "floor": ("", {}),
    "arrow-scoring": ("arrow", {"scoring": True}),
    "petastorm-scoring": ("petastorm", {"scoring": True}),
    "petastorm-file-order-exact": ("petastorm", {"shuffle": False}),
    "petastorm-scoring-1-worker": ("petastorm", {"scoring": True, "workers": 1}),
    "petastorm-scoring-petastorm-defaults": ("petastorm", {"scoring": True, "workers": 10, "queue_size": 50}),
    "petastorm-training": ("petastorm", {"shuffle": True, "truncation": "default"}),
    "petastorm-training-1-worker": ("petastorm", {"shuffle": True, "truncation": "default", "workers": 1}),
    "petastorm-training-token-budget": ("petastorm", {"shuffle": True, "truncation": "default", "token_budget": 500_000}),
}
DESCRIPTIONS = {
    "baseline": "imports only (the RSS every setting starts from)",
    "floor": "floor: pyarrow row groups -> numpy -> torch, one thread",
    "arrow-scoring": "pyarrow reader, scoring (file order, full length)",
    "petastorm-scoring": "Petastorm reader, scoring (defaults: 2 workers, queue 2)",
    "petastorm-file-order-exact": "Petastorm reader, file order, full length, exact 256-request batches",
    "petastorm-scoring-1-worker": "Petastorm reader, scoring, 1 worker",
    "petastorm-scoring-petastorm-defaults": "Petastorm reader, scoring, Petastorm's defaults (10 workers, queue 50)",
    "petastorm-training": "Petastorm reader, training (shuffles + U-shaped truncation, mean ~2k)",
    "petastorm-training-1-worker": "Petastorm reader, training, 1 worker",
    "petastorm-training-token-budget": "Petastorm reader, training, batches of 500k history tokens",
}


def prepare(work: Path, log=print, spec=None) -> dict[int, Path]:
    """Generate, build and publish the benchmark data unless it is there already."""
    from longseq.pipelines.sample import build_and_publish, is_published
    from longseq.sources.generate import PROFILES, generate

    profile = PROFILES[PROFILE]
    end = START + dt.timedelta(days=profile.days - 1)
    raw = work / "raw"
    if not (raw / f"ds={end}" / "_SUCCESS").exists():
        log(f"generating {PROFILE} into {raw}")
        generate(raw, profile, seed=0, start=START, spec=spec or DEFAULT_SPEC)
    outs = {}
    for max_len in MAX_LENS:
        out = work / f"out{max_len}"
        if not is_published(out, end):
            log(f"building and publishing max_len {max_len} into {out}")
            build_and_publish(raw, out, START, end, max_len=max_len, override_reason="benchmark: generated data", spec=spec)
        else:
            data_spec(str(out), spec)  # the spec it was built with must be the one asked for
        outs[max_len] = out
    return outs


def _floor(urls: list[str], spec) -> tuple[int, int]:
    import warnings

    import pyarrow.parquet as pq
    import torch

    from longseq.dataset.storage import local_path
    from longseq.reader.chunks import arrow_values
    from longseq.schemas.contracts import contracts_of

    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

    requests = tokens = 0
    for url in urls:
        f = pq.ParquetFile(local_path(url))
        for g in range(f.metadata.num_row_groups):
            table = f.read_row_group(g, columns=contracts_of(spec).request_record.names)
            for name in table.column_names:
                col = table.column(name).combine_chunks()
                if hasattr(col, "flatten"):  # zero-copy views: the least a reader can do
                    torch.from_numpy(arrow_values(col.offsets))
                    values = torch.from_numpy(arrow_values(col.flatten()))
                    tokens += len(values) if name == "hist_item_id" else 0
            requests += table.num_rows
    return requests, tokens


def run_one(setting: str, data: Path, start: dt.date, end: dt.date) -> dict:
    """One setting over the days, in this process."""
    from longseq.dataset.published import published_files, verify_published
    from longseq.features.lengths import LengthSampler
    from longseq.reader.readers import ReaderConfig, open_reader

    spec = data_spec(str(data))  # the one it was built with
    urls = [f.url for f in published_files(str(data), start, end, spec=spec)]
    engine, overrides = SETTINGS[setting]
    verify_seconds, hashed = 0.0, 0
    if setting not in ("baseline", "floor"):  # what opening a reader does first, timed apart
        t = time.perf_counter()
        hashed = verify_published(urls, spec)
        verify_seconds = time.perf_counter() - t
    t = time.perf_counter()
    if setting == "baseline":
        requests = tokens = 0
    elif setting == "floor":
        requests, tokens = _floor(urls, spec)
    else:
        if overrides.get("truncation") == "default":
            overrides = {**overrides, "truncation": LengthSampler()}
        config = ReaderConfig(**{k: v for k, v in overrides.items() if k != "scoring"})
        scoring = overrides.get("scoring", False)
        reader = open_reader(urls, config.for_scoring() if scoring else config, engine, spec)
        requests = tokens = 0
        for batch in reader.batches(0):
            requests += batch.num_requests
            tokens += batch.num_history_tokens
    seconds = time.perf_counter() - t
    return {"requests": requests, "tokens": tokens, "seconds": seconds, "verify_seconds": verify_seconds,
            "hashed_bytes": hashed, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def arguments(ap: argparse.ArgumentParser) -> None:
    """The benchmark's flags (`longseq bench reader --help`)."""
    add_work(ap, "bench-work/reader", "the generated and built data, kept between runs")
    ap.add_argument("--days", type=positive_int, default=1, help="read the last N days (default 1)")
    ap.add_argument("--repeat", type=positive_int, default=3, help="alternating rounds; medians are reported (default 3)")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset of: " + ", ".join(SETTINGS))
    add_spec(ap, "dataset spec of the generated logs and the build (default: the default spec); a --work built "
                 "with another spec is refused")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child process: one setting, JSON out
    ap.add_argument("--child-data", dest="data", type=Path, help=argparse.SUPPRESS)  # the child's data


def main(argv: list[str]) -> int:
    ap = bench_parser('reader', __doc__, arguments)
    args = ap.parse_args(argv)
    from longseq.sources.generate import PROFILES

    end = START + dt.timedelta(days=PROFILES[PROFILE].days - 1)
    start = end - dt.timedelta(days=args.days - 1)
    if args.one:
        print(json.dumps(run_one(args.one, args.data, start, end)))
        return 0

    settings = args.settings.split(",")
    outs = prepare(args.work, spec=dataset_spec(args))
    print(f"command: longseq bench reader {' '.join(argv)}\nreading ds={start}..{end} of {PROFILE}, "
          f"median of {args.repeat} alternating rounds, one process per measurement\n")
    results: dict[tuple[int, str], list[dict]] = {}
    for _ in range(args.repeat):
        for max_len, out in outs.items():
            for setting in settings:
                cmd = [sys.executable, "-m", "longseq.bench.reader_throughput", "--one", setting, "--child-data", str(out),
                       "--days", str(args.days)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    print(done.stderr[-2000:], file=sys.stderr)
                    return done.returncode
                results.setdefault((max_len, setting), []).append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("| max_len | reader | requests/s | history tokens/s | x floor (requests/s) | peak RSS MB "
          "| checksum s (MB) | read s | requests/s with checksum |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for max_len in outs:
        floor = _median_rate(results[(max_len, "floor")], "requests") if "floor" in settings else None
        for setting in settings:
            runs = results[(max_len, setting)]
            rss = statistics.median(r["peak_rss_mb"] for r in runs)
            if setting == "baseline":
                print(f"| {max_len:,} | {DESCRIPTIONS[setting]} | | | | {rss:,.0f} | | | |")
                continue
            rate, tokens = _median_rate(runs, "requests"), _median_rate(runs, "tokens")
            ratio = f"{rate / floor:.2f}" if floor else ""
            read = statistics.median(r["seconds"] for r in runs)
            check = statistics.median(r["verify_seconds"] for r in runs)
            hashed = statistics.median(r["hashed_bytes"] for r in runs) / 2**20
            with_check = statistics.median(r["requests"] / (r["seconds"] + r["verify_seconds"]) for r in runs)
            checked = f"{check:.3f} ({hashed:,.0f})" if setting != "floor" else ""
            print(f"| {max_len:,} | {DESCRIPTIONS[setting]} | {rate:,.0f} | {tokens / 1e6:,.1f} M | {ratio} | {rss:,.0f} "
                  f"| {checked} | {read:.3f} | {with_check if setting != 'floor' else rate:,.0f} |")
    return 0


def _median_rate(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] / r["seconds"] for r in runs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
