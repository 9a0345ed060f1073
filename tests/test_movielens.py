"""The MovieLens adapter on real MovieLens ratings (a 40-user sample of latest-small kept
in tests/data, see its README for the license): the mapping holds row by row, and the
built histories are each user's earlier sessions in (timestamp, movieId) order. Without a
spec it writes what it always wrote; with the movielens spec, that spec's raw log: the
rating-derived tasks, the rating and the movie's genre."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from longseq.cli.main import main
from longseq.dataset.parquet_files import check_parquet_files
from longseq.dataset.storage import LocalStorage
from longseq.etl.batch.build import BuildConfig, build
from longseq.schemas.contracts import DAY_MS, RAW_LOG, contracts_of
from longseq.schemas.spec import SPECS_DIR, SpecError, load_spec
from longseq.sources import SAMPLE_START
from longseq.sources.movielens import GENRES, MOVIELENS_SPEC_FILE, MovieLensMapping, adapt_movielens, genre_id
from tests.records import read_records
from tests.test_generate import values_digest

RATINGS = Path(__file__).resolve().parent / "data" / "movielens-sample" / "ratings.csv"
MOVIES = RATINGS.with_name("movies.csv")
MOVIELENS = load_spec(MOVIELENS_SPEC_FILE)
START = SAMPLE_START
DAYS = 10


@pytest.fixture(scope="module")
def adapted(tmp_path_factory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    out = tmp_path_factory.mktemp("movielens") / "raw"
    adapt_movielens(RATINGS, out, mapping=MovieLensMapping(days=DAYS, start=START), progress=lambda m: None)
    rows = pd.concat([pq.read_table(f).to_pandas() for f in sorted(out.glob("ds=*/*.parquet"))], ignore_index=True)
    return out, rows, pd.read_csv(RATINGS)


def test_every_rating_is_one_impression_under_the_contract(adapted):
    out, rows, ratings = adapted
    assert len(rows) == len(ratings) and rows["event_id"].is_unique
    assert (rows["event_ts"] >= rows["request_ts"]).all()
    for part in out.glob("ds=*"):
        day = dt.date.fromisoformat(part.name[3:])
        ts = pq.read_table(part, columns=["request_ts"]).column("request_ts").to_numpy() if list(part.glob("*.parquet")) else []
        assert all(int(t) // DAY_MS * DAY_MS == int(pd.Timestamp(day, tz="UTC").timestamp() * 1000) for t in ts)
        assert (part / "_SUCCESS").exists()
    assert len(list(out.glob("ds=*"))) == DAYS
    merged = rows.assign(movieId=rows["item_id"], userId=rows["user_id"]).merge(ratings, on=["userId", "movieId"])
    r = merged["rating"]
    assert (merged["finish"] == (r >= 4)).all() and (merged["like"] == (r == 5)).all()
    assert (merged["skip"] == (r <= 2)).all() and (merged["comment"] == (r <= 1)).all()


def test_order_ties_and_sessions(adapted):
    _, rows, ratings = adapted
    merged = rows.merge(ratings, left_on=["user_id", "item_id"], right_on=["userId", "movieId"])
    merged = merged.sort_values(["userId", "timestamp", "movieId"])
    for _, user in merged.groupby("userId"):
        assert np.all(np.diff(user["event_ts"].to_numpy()) > 0), "strictly increasing in (timestamp, movieId) order"
        gaps = np.diff(user["timestamp"].to_numpy())
        same = user["request_id"].to_numpy()[1:] == user["request_id"].to_numpy()[:-1]
        assert not (same & (gaps > 30 * 60)).any(), "a 30-minute pause always starts a new request"
        assert (user.groupby("request_id").size() <= 20).all()
        assert (user.groupby("request_id")["position"].apply(lambda p: list(p) == list(range(len(p))))).all()


def test_built_histories_are_the_earlier_sessions(adapted, tmp_path):
    from longseq.etl.batch.polars_engine import PolarsEngine

    raw, rows, ratings = adapted
    end = START + dt.timedelta(days=DAYS - 1)
    build(PolarsEngine(), BuildConfig(str(raw), str(tmp_path / "out"), START, end, 10_000), log=lambda m: None)
    records = read_records(tmp_path / "out" / "requests" / f"ds={end}").to_pandas()
    ordered = rows.merge(ratings, left_on=["user_id", "item_id"], right_on=["userId", "movieId"]).sort_values(
        ["userId", "timestamp", "movieId"])
    assert len(records) > 20
    for _, rec in records.iterrows():
        user = ordered[ordered["userId"] == rec["user_id"]]
        earlier = user[user["event_ts"] < rec["request_ts"]]["movieId"].tolist()
        assert list(rec["hist_item_id"]) == earlier
        assert sorted(rec["tgt_item_id"]) == sorted(user[user["request_id"] == rec["request_id"]]["movieId"])


def test_a_file_that_is_not_movielens_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "ratings.csv"
    bad.write_text("user,item\n1,2\n")
    assert main(["adapt", "movielens", "--ratings", str(bad), "--raw", str(tmp_path / "raw")]) == 1
    err = capsys.readouterr().err
    assert "is not a MovieLens ratings file" in err and "Traceback" not in err
    assert main(["adapt", "movielens", "--ratings", str(tmp_path / "none.csv"), "--raw", str(tmp_path / "raw")]) == 1
    assert "no ratings file" in capsys.readouterr().err


# ---------------------------------------------------------------- the default spec, unchanged

# sha256 of the values the adapter wrote for this sample (DAYS days from START) before it
# knew of specs (commit 51563e7): the benchmarks' MovieLens data must not change.
DEFAULT_SAMPLE_VALUES = "95879aa0a780df563262c41b6111a86f9d858ce091151a4d80b241efd81d1c92"


def test_without_a_spec_the_adapter_writes_what_it_always_wrote(adapted):
    out, _, _ = adapted
    assert values_digest(out) == DEFAULT_SAMPLE_VALUES
    assert pq.read_schema(next(out.glob("ds=*/*.parquet"))).names == RAW_LOG.names


# ---------------------------------------------------------------- the movielens spec


@pytest.fixture(scope="module")
def adapted_spec(tmp_path_factory) -> tuple[Path, pd.DataFrame, dict]:
    out = tmp_path_factory.mktemp("movielens-spec") / "raw"
    report = adapt_movielens(RATINGS, out, mapping=MovieLensMapping(days=DAYS, start=START), progress=lambda m: None,
                             spec=MOVIELENS_SPEC_FILE)
    rows = pd.concat([pq.read_table(f).to_pandas() for f in sorted(out.glob("ds=*/*.parquet"))], ignore_index=True)
    return out, rows, report


def test_the_movielens_spec_raw_log_with_rating_labels(adapted, adapted_spec):
    out, rows, report = adapted_spec
    raw_log = contracts_of(MOVIELENS).raw_log
    for part in sorted(out.glob("ds=*")):
        check_parquet_files(LocalStorage(), str(part), raw_log)
    assert list(rows.columns) == raw_log.names and report["spec"]["name"] == "movielens"
    # the same impressions, requests and times as without a spec
    _, default_rows, ratings = adapted
    fixed = ["event_id", "request_id", "user_id", "request_ts", "item_id", "author_id", "position", "event_ts"]
    pd.testing.assert_frame_equal(rows[fixed], default_rows[fixed])
    merged = rows.merge(ratings, left_on=["user_id", "item_id"], right_on=["userId", "movieId"])
    assert len(merged) == len(ratings)
    r = merged["rating_y"]
    assert (merged["rating_x"] == r).all()
    assert (merged["liked"] == (r >= 4)).all() and (merged["disliked"] == (r <= 2)).all()
    assert (merged["loved"] == (r == 5)).all() and (merged["hated"] == (r <= 1)).all()
    # the same labels, bit for bit, as the default spec's finish, skip, like, comment
    for new, old in zip(MOVIELENS.tasks, ("finish", "skip", "like", "comment")):
        assert (rows[new] == default_rows[old]).all()


def test_genre_id_is_the_movies_most_specific_genre():
    assert genre_id("Adventure|Animation|Children|Comedy|Fantasy") == GENRES.index("Animation") + 1
    assert genre_id("Comedy|Drama|Romance") == GENRES.index("Romance") + 1
    assert genre_id("Action|IMAX") == GENRES.index("Action") + 1  # IMAX is a format, not a genre
    assert genre_id("IMAX") == GENRES.index("IMAX") + 1
    assert genre_id("Children's|Comedy") == genre_id("Children|Comedy")  # MovieLens 1M's spelling
    assert genre_id("(no genres listed)") is None and genre_id("") is None
    # an unknown genre: its own stable id, after the known ones
    assert genre_id("Zombie") == genre_id("Zombie|(no genres listed)") > len(GENRES)
    assert genre_id("Comedy|Zombie") == GENRES.index("Comedy") + 1


def test_genre_ids_follow_movies_csv(adapted_spec):
    _, rows, _ = adapted_spec
    movies = pd.read_csv(MOVIES).set_index("movieId").genres
    listed = movies.loc[rows.item_id].str.split("|").to_numpy()
    assert rows.genre_id.notna().all() and rows.genre_id.between(1, len(GENRES)).all()
    for genres, gid in zip(listed, rows.genre_id):
        chosen = GENRES[gid - 1]
        assert chosen in genres and not any(GENRES.index(g) < gid - 1 for g in genres if g in GENRES)
    assert rows.genre_id.nunique() >= 15


def test_a_movie_without_genres_has_a_null_genre_id(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,10,4.0,100\n1,11,2.0,200\n1,12,5,300\n")
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n10,A,Drama|War\n11,B,(no genres listed)\n")
    adapt_movielens(tmp_path / "ratings.csv", tmp_path / "raw", mapping=MovieLensMapping(days=1, start=START),
                    spec=MOVIELENS)
    rows = pd.concat([pq.read_table(f).to_pandas() for f in (tmp_path / "raw").glob("ds=*/*.parquet")])
    genre = rows.set_index("item_id").genre_id  # 12 is missing from movies.csv
    assert genre.isna().to_dict() == {10: False, 11: True, 12: True} and genre[10] == GENRES.index("War") + 1


def test_built_records_carry_the_genre_on_history_and_target(adapted_spec, tmp_path):
    from longseq.etl.batch.polars_engine import PolarsEngine

    raw, rows, _ = adapted_spec
    end = START + dt.timedelta(days=DAYS - 1)
    build(PolarsEngine(), BuildConfig(str(raw), str(tmp_path / "out"), START, end, 10_000, spec=MOVIELENS),
          log=lambda m: None)
    records = read_records(tmp_path / "out" / "requests" / f"ds={end}").to_pandas()
    genre_of = rows.drop_duplicates("item_id").set_index("item_id").genre_id
    assert len(records) > 20 and {"hist_genre", "tgt_genre", "tgt_liked"} <= set(records.columns)
    for _, rec in records.iterrows():
        assert list(rec["hist_genre"]) == genre_of.loc[list(rec["hist_item_id"])].tolist()
        assert list(rec["tgt_genre"]) == genre_of.loc[list(rec["tgt_item_id"])].tolist()


def test_a_spec_movielens_cannot_fill_is_a_clear_error(tmp_path):
    with pytest.raises(SpecError, match=r"ecommerce.yaml: tasks: the MovieLens adapter cannot make 'click'"):
        adapt_movielens(RATINGS, tmp_path / "raw", spec=SPECS_DIR / "ecommerce.yaml")
    assert not (tmp_path / "raw").exists()  # refused before writing anything


def test_the_rating_may_not_be_a_target_feature(tmp_path):
    """The labels are made of the rating: on a target it is the answer."""
    from longseq.schemas.spec import SpecError, load_spec, spec_from_dict
    from longseq.sources.movielens import MOVIELENS_SPEC_FILE, adapt_movielens

    data = load_spec(MOVIELENS_SPEC_FILE).to_dict()
    data["features"]["stars"] = {"kind": "numeric", "source": "rating", "sides": ["history", "target"]}
    with pytest.raises(SpecError, match="features.stars: the rating is the answer on a target"):
        adapt_movielens(RATINGS, tmp_path / "raw", spec=spec_from_dict(data), progress=lambda m: None)
    assert not (tmp_path / "raw").exists()
