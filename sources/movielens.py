"""`longseq adapt movielens`: MovieLens ratings -> contract-1 impression logs.

The mapping (docs/MOVIELENS.md):
- one rating = one impression; user_id = userId, item_id = movieId, event_id = "ml-<user>-<movie>"
  (MovieLens has one rating per user and movie).
- order: a user's ratings sorted by (timestamp, movieId); many share a second, and the
  movieId breaks those ties.
- requests: a user's ratings split into sessions where the gap to the previous rating
  exceeds `session_gap_minutes`, or the session already holds `max_targets`; a session is
  one request, request_id = "ml-<user>-<session>", position = rank in the session.
- time: the whole file is mapped linearly (order kept) onto `days` days from `start`, so
  that two decades make a month of daily partitions; event_ts is the mapped time, made
  strictly increasing per user in the order above (+1 ms steps), and request_ts is the
  session's first event_ts, so every outcome is logged at or after its request.
- labels: finish = rating >= 4, like = rating = 5, skip = rating <= 2, comment = rating <= 1.
- author_id: the movie's genre combination (movies.csv), hashed; the same genres, the same
  "author" (movieId mod 1000 + 1 for a movie missing from movies.csv). play_ms and
  duration_ms are null (MovieLens has none).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dataset.raw import RawPartitionWriter
from schemas.contracts import DAY_MS, RAW_LOG, TASKS, day_start_ms
from schemas.errors import LongseqError, MissingPrerequisiteError
from schemas.forms import to_arrow
from sources import SAMPLE_START

RATING_COLUMNS = ("userId", "movieId", "rating", "timestamp")
LABELS = {"finish": lambda r: r >= 4.0, "skip": lambda r: r <= 2.0, "like": lambda r: r >= 5.0, "comment": lambda r: r <= 1.0}


@dataclass(frozen=True)
class MovieLensMapping:
    days: int = 30  # the whole file is mapped onto this many days
    start: dt.date = SAMPLE_START
    session_gap_minutes: float = 30.0  # a longer pause starts a new request
    max_targets: int = 20  # most ratings in one request


def _read_ratings(path: Path):
    import polars as pl

    if not path.exists():
        raise MissingPrerequisiteError(f"no ratings file at {path}")
    try:
        frame = pl.read_csv(path, columns=list(RATING_COLUMNS),
                            schema_overrides={"userId": pl.Int64, "movieId": pl.Int64, "rating": pl.Float64, "timestamp": pl.Int64})
    except Exception as e:  # not a CSV, missing columns, bad values
        raise LongseqError(f"{path} is not a MovieLens ratings file (userId,movieId,rating,timestamp): "
                           f"{str(e).splitlines()[0][:200]}") from None
    if frame.null_count().sum_horizontal().item():
        raise LongseqError(f"{path} has empty values in {', '.join(c for c in RATING_COLUMNS if frame[c].null_count())}")
    return frame


def _authors(movies: Path | None) -> dict[int, int]:
    """movieId -> author_id: a stable hash of the movie's genre combination."""
    import polars as pl

    if movies is None or not movies.exists():
        return {}
    table = pl.read_csv(movies, columns=["movieId", "genres"], schema_overrides={"movieId": pl.Int64, "genres": pl.Utf8})
    ids = {g: int.from_bytes(hashlib.sha1(g.encode()).digest()[:8], "little") >> 1 for g in table["genres"].unique().to_list()}
    return {m: ids[g] for m, g in zip(table["movieId"].to_list(), table["genres"].to_list())}


def to_impressions(ratings, authors: dict[int, int], mapping: MovieLensMapping):
    """Ratings (polars frame) -> contract-1 rows (polars frame), one per rating."""
    import polars as pl

    if mapping.days < 1 or mapping.max_targets < 1 or mapping.session_gap_minutes <= 0:
        raise LongseqError("days and max_targets must be >= 1 and the session gap > 0")
    r = ratings.sort(["userId", "timestamp", "movieId"])
    t0, t1 = r["timestamp"].min(), r["timestamp"].max()
    window_ms = mapping.days * DAY_MS - 1
    scale = min(1.0, window_ms / max((t1 - t0) * 1000, 1))  # compress, never stretch
    gap_s = mapping.session_gap_minutes * 60
    r = r.with_columns(
        idx=pl.int_range(pl.len()).over("userId"),
        mapped=(day_start_ms(mapping.start) + ((pl.col("timestamp") - t0) * 1000 * scale).floor()).cast(pl.Int64),
        new_gap=(pl.col("timestamp").diff().over("userId").fill_null(gap_s + 1) > gap_s),
    )
    # sessions: a gap opens one; so does a full one (counted within the gap-session)
    r = r.with_columns(gap_session=pl.col("new_gap").cum_sum().over("userId"))
    r = r.with_columns(in_gap=pl.int_range(pl.len()).over(["userId", "gap_session"]))
    r = r.with_columns(session=(pl.col("gap_session") * 1_000_000 + pl.col("in_gap") // mapping.max_targets))
    # strictly increasing event_ts per user: e_i = max(s_i, e_(i-1) + 1)  <=>  e_i - i = cummax(s_i - i)
    r = r.with_columns(event_ts=((pl.col("mapped") - pl.col("idx")).cum_max().over("userId") + pl.col("idx")))
    r = r.with_columns(
        request_ts=pl.col("event_ts").min().over(["userId", "session"]),
        position=pl.int_range(pl.len()).over(["userId", "session"]).cast(pl.Int32),
        session_no=pl.col("session").rank("dense").over("userId").cast(pl.Int64) - 1,
    )
    author = pl.col("movieId").replace_strict(authors, default=None) if authors else pl.lit(None, dtype=pl.Int64)
    out = r.select(
        event_id=pl.format("ml-{}-{}", "userId", "movieId"),
        request_id=pl.format("ml-{}-{}", "userId", "session_no"),
        user_id="userId", request_ts="request_ts", item_id="movieId",
        author_id=author.fill_null(pl.col("movieId") % 1000 + 1).cast(pl.Int64),
        position="position", event_ts="event_ts",
        play_ms=pl.lit(None, dtype=pl.Int32), duration_ms=pl.lit(None, dtype=pl.Int32),
        **{task: LABELS[task](pl.col("rating")).cast(pl.Int8) for task in TASKS},
    )
    return out, scale


def adapt_movielens(ratings: Path, out: Path, movies: Path | None = None, mapping: MovieLensMapping | None = None,
                    progress: Callable[[str], None] | None = None) -> dict:
    """Write contract-1 partitions ds=start..start+days-1 (every day, empty ones too) and
    out/_adapter_report.json; return the report."""
    import polars as pl

    mapping = mapping or MovieLensMapping()
    ratings, out = Path(ratings), Path(out)
    movies = movies if movies is not None else ratings.with_name("movies.csv")
    frame = _read_ratings(ratings)
    rows, scale = to_impressions(frame, _authors(movies), mapping)
    rows = rows.with_columns(ds=(pl.col("request_ts") // DAY_MS))
    schema = to_arrow(RAW_LOG)
    first = day_start_ms(mapping.start) // DAY_MS
    per_day = {k[0]: g for k, g in rows.partition_by("ds", as_dict=True).items()}
    for d in range(mapping.days):
        day = mapping.start + dt.timedelta(days=d)
        writer = RawPartitionWriter(out, day)
        part = per_day.get(first + d)
        if part is not None:
            writer.write(part.drop("ds").to_arrow().cast(schema))
        writer.commit()
        if progress:
            progress(f"ds={day}: {0 if part is None else part.height:,} ratings")
    per_user = frame.group_by("userId").len()["len"].to_numpy()
    report = {
        "source": str(ratings), "movies": str(movies) if movies.exists() else None, **{k: str(v) for k, v in asdict(mapping).items()},
        "ratings": frame.height, "users": int(len(per_user)), "items": int(frame["movieId"].n_unique()),
        "requests": int(rows["request_id"].n_unique()), "time_scale": scale,
        "ratings_per_user": {q: float(np.percentile(per_user, p)) for q, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
        "label_rates": {t: float(rows[t].mean()) for t in TASKS},
    }
    report["out"] = str(out)
    (out / "_adapter_report.json").write_text(json.dumps(report, indent=2))
    return report


def adaptation_summary(report: dict) -> str:
    """One line saying what adapt_movielens did, from its report."""
    return (f"adapted {report['ratings']:,} ratings of {report['users']:,} users into {report['requests']:,} requests "
            f"over {report['days']} days from {report['start']} -> {report['out']} "
            f"(time compressed {1 / report['time_scale']:,.0f}x)")
