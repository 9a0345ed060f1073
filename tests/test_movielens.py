"""The MovieLens adapter on real MovieLens ratings (a 40-user sample of latest-small kept
in tests/data, see its README for the license): the mapping holds row by row, and the
built histories are each user's earlier sessions in (timestamp, movieId) order."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cli.main import main
from etl.build import BuildConfig, build
from schemas.contracts import DAY_MS
from sources import SAMPLE_START
from sources.movielens import MovieLensMapping, adapt_movielens

RATINGS = Path(__file__).resolve().parent / "data" / "movielens-sample" / "ratings.csv"
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
    from etl.polars_build import PolarsEngine

    raw, rows, ratings = adapted
    end = START + dt.timedelta(days=DAYS - 1)
    build(PolarsEngine(), BuildConfig(str(raw), str(tmp_path / "out"), START, end, 10_000), log=lambda m: None)
    records = pq.read_table(tmp_path / "out" / "requests" / f"ds={end}").to_pandas()
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
