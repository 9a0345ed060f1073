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

That is the default spec's raw log, what the adapter writes without a spec. With a spec
(schemas/specs/movielens.yaml) it writes that spec's raw log: each task is a threshold of
the rating (RATING_LABELS, by task name) and each input a MovieLens value (the rating, the
movie's most specific genre as genre_id, or the default spec's null play_ms/duration_ms);
a spec asking for anything else is a SpecError naming it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from longseq.dataset.raw import RawPartitionWriter
from longseq.dataset.spec_record import spec_summary
from longseq.schemas.contracts import DAY_MS, DEFAULT_SPEC, TASKS, contracts_of, day_start_ms
from longseq.schemas.errors import LongseqError, MissingPrerequisiteError
from longseq.schemas.forms import to_arrow
from longseq.schemas.spec import SPECS_DIR, DatasetSpec, SpecError, resolve_spec
from longseq.sources import SAMPLE_START

RATING_COLUMNS = ("userId", "movieId", "rating", "timestamp")
MOVIELENS_SPEC_FILE = SPECS_DIR / "movielens.yaml"
# The labels the adapter makes of a rating, by task name: the movielens spec's four and,
# the same thresholds in the same bit order, the default spec's four (docs/MOVIELENS.md).
RATING_LABELS = {
    "liked": lambda r: r >= 4.0, "disliked": lambda r: r <= 2.0, "loved": lambda r: r >= 5.0, "hated": lambda r: r <= 1.0,
}
RATING_LABELS.update(zip(TASKS, list(RATING_LABELS.values())))
# The inputs the adapter can fill, by name (see _input_columns).
INPUTS = ("rating", "genre_id", "play_ms", "duration_ms")
# MovieLens genres, the most specific first (the fewest movies in latest-small first): a
# movie's genre_id is that of the first of its genres in this order, position + 1. IMAX is
# a format rather than a genre, so it comes last.
GENRES = (
    "Film-Noir", "Western", "War", "Musical", "Animation", "Documentary", "Mystery", "Children", "Fantasy", "Sci-Fi",
    "Horror", "Crime", "Adventure", "Romance", "Action", "Thriller", "Comedy", "Drama", "IMAX",
)
GENRE_ALIASES = {"Children's": "Children"}  # MovieLens 1M's spelling
NO_GENRES = "(no genres listed)"


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


def _read_movies(movies: Path | None) -> tuple[dict[int, int], dict[int, int]]:
    """(movieId -> author_id, movieId -> genre_id) from movies.csv; both empty without one."""
    import polars as pl

    if movies is None or not movies.exists():
        return {}, {}
    table = pl.read_csv(movies, columns=["movieId", "genres"], schema_overrides={"movieId": pl.Int64, "genres": pl.Utf8})
    ids, genres = table["movieId"].to_list(), table["genres"].to_list()
    return _authors(ids, genres), _genre_ids(ids, genres)


def _stable_id(text: str) -> int:
    """A positive int64 id of a string, the same in every run and on every machine."""
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "little") >> 1


def _authors(ids: list[int], genres: list[str | None]) -> dict[int, int]:
    """movieId -> author_id: a stable hash of the movie's genre combination."""
    return {m: _stable_id(g) for m, g in zip(ids, genres) if g is not None}


def genre_id(genres: str | None) -> int | None:
    """The id of the most specific of a movie's pipe-separated genres (GENRES order, id =
    position + 1; a genre not in GENRES: a stable hash, after them); None without a genre."""
    names = [GENRE_ALIASES.get(g, g) for g in (genres or "").split("|") if g and g != NO_GENRES]
    if not names:
        return None
    rank = {g: i for i, g in enumerate(GENRES)}
    best = min(names, key=lambda g: (rank.get(g, len(GENRES)), g))
    return rank[best] + 1 if best in rank else _stable_id(best)


def _genre_ids(ids: list[int], genres: list[str | None]) -> dict[int, int]:
    """movieId -> genre_id, for the movies that list a genre."""
    by_movie = {m: genre_id(g) for m, g in zip(ids, genres)}
    return {m: g for m, g in by_movie.items() if g is not None}


def _check_spec(spec: DatasetSpec) -> None:
    """SpecError unless the adapter can make every task and input of `spec`."""
    where = spec.source or f"spec {spec.name!r}"
    for t in spec.tasks:
        if t not in RATING_LABELS:
            raise SpecError(f"{where}: tasks: the MovieLens adapter cannot make {t!r} of a rating; "
                            f"it makes {', '.join(RATING_LABELS)}")
    for i in spec.inputs:
        if i.name not in INPUTS:
            raise SpecError(f"{where}: inputs.{i.name}: MovieLens has no such value; the adapter fills "
                            f"{', '.join(INPUTS)}")
    ratios = {d.name: d.ratio for d in spec.derived}
    for f in spec.features_on("target"):
        if "rating" in ratios.get(f.source, (f.source,)):  # the labels are made of it
            raise SpecError(f"{where}: features.{f.name}: the rating is the answer on a target (the labels are made "
                            f"of it): a rating feature may be on history only")


def _input_columns(genres: dict[int, int]) -> dict:
    """The polars expression of each input the adapter fills (INPUTS), over the sorted ratings."""
    import polars as pl

    genre = pl.col("movieId").replace_strict(genres, default=None) if genres else pl.lit(None)
    return {
        "rating": pl.col("rating"),
        "genre_id": genre.cast(pl.Int64),  # null for a movie without a genre or missing from movies.csv
        "play_ms": pl.lit(None, dtype=pl.Int32),
        "duration_ms": pl.lit(None, dtype=pl.Int32),
    }


def to_impressions(ratings, authors: dict[int, int], mapping: MovieLensMapping,
                   spec: DatasetSpec = DEFAULT_SPEC, genres: dict[int, int] | None = None):
    """Ratings (polars frame) -> contract-1 rows of `spec`'s raw log (polars frame), one per rating."""
    import polars as pl

    _check_spec(spec)
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
    columns = {
        "event_id": pl.format("ml-{}-{}", "userId", "movieId"),
        "request_id": pl.format("ml-{}-{}", "userId", "session_no"),
        "user_id": pl.col("userId"), "request_ts": pl.col("request_ts"), "item_id": pl.col("movieId"),
        "author_id": author.fill_null(pl.col("movieId") % 1000 + 1).cast(pl.Int64),
        "position": pl.col("position"), "event_ts": pl.col("event_ts"),
        **_input_columns(genres or {}),
        **{task: RATING_LABELS[task](pl.col("rating")).cast(pl.Int8) for task in spec.tasks},
    }
    out = r.select(**{name: columns[name] for name in contracts_of(spec).raw_log.names})
    return out, scale


def adapt_movielens(ratings: Path, out: Path, movies: Path | None = None, mapping: MovieLensMapping | None = None,
                    progress: Callable[[str], None] | None = None,
                    spec: DatasetSpec | Path | str = DEFAULT_SPEC) -> dict:
    """Write contract-1 partitions of `spec`'s raw log (a DatasetSpec or its file; the
    movielens spec: MOVIELENS_SPEC_FILE), ds=start..start+days-1 (every day, empty ones
    too), and out/_adapter_report.json; return the report."""
    import polars as pl

    mapping = mapping or MovieLensMapping()
    spec = resolve_spec(spec)
    _check_spec(spec)  # before reading anything
    ratings, out = Path(ratings), Path(out)
    movies = movies if movies is not None else ratings.with_name("movies.csv")
    frame = _read_ratings(ratings)
    authors, genres = _read_movies(movies)
    rows, scale = to_impressions(frame, authors, mapping, spec, genres)
    rows = rows.with_columns(ds=(pl.col("request_ts") // DAY_MS))
    schema = to_arrow(contracts_of(spec).raw_log)
    first = day_start_ms(mapping.start) // DAY_MS
    per_day = {k[0]: g for k, g in rows.partition_by("ds", as_dict=True).items()}
    for d in range(mapping.days):
        day = mapping.start + dt.timedelta(days=d)
        writer = RawPartitionWriter(out, day, spec.raw_names)
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
        "label_rates": {t: float(rows[t].mean()) for t in spec.tasks},
    }
    if spec.fingerprint != DEFAULT_SPEC.fingerprint:  # the default spec's report stays as it was, byte for byte
        report["spec"] = spec_summary(spec)
    report["out"] = str(out)
    (out / "_adapter_report.json").write_text(json.dumps(report, indent=2))
    return report


def adaptation_summary(report: dict) -> str:
    """One line saying what adapt_movielens did, from its report."""
    return (f"adapted {report['ratings']:,} ratings of {report['users']:,} users into {report['requests']:,} requests "
            f"over {report['days']} days from {report['start']} -> {report['out']} "
            f"(time compressed {1 / report['time_scale']:,.0f}x)")
