"""The build's accounting can fail: rows read = targets + quarantined + duplicates, each
side counted independently (rows and duplicates from the input, the rest from the files
written), so a writer that loses or doubles a row stops the day before it is committed."""

from __future__ import annotations

import pytest

from longseq.dataset.layout import BuildLayout
from longseq.dataset.storage import LocalStorage
from longseq.etl.batch.build import AccountingError, BuildConfig, build
from longseq.sources import SAMPLE_START
from longseq.sources.generate import PROFILES, generate

ENGINES = [pytest.param("polars", id="polars"), pytest.param("spark", id="spark", marks=pytest.mark.spark)]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw")
    generate(out, PROFILES["tiny"].with_sizes(20, 1), seed=3, start=SAMPLE_START, dirty=0.05)
    return out


def _engine_losing_a_row(name: str, request, monkeypatch, double: bool):
    """An engine whose request writer drops (or repeats) one valid impression."""
    if name == "polars":
        import polars as pl

        import longseq.etl.batch.polars_engine as pb

        real = pb._requests  # both layouts' records are made of its requests

        def faulty(kept, events, c):
            requests, user_events = real(kept, events, c)
            return (pl.concat([requests, requests.head(1)]) if double else requests.slice(1)), user_events

        monkeypatch.setattr(pb, "_requests", faulty)
        return pb.PolarsEngine()
    from longseq.etl.batch.spark_engine import SparkEngine

    real = SparkEngine._write_requests

    def faulty(self, kept, recent, users, max_len, path, *rest):
        changed = kept.unionByName(kept.orderBy("event_id").limit(1)) if double else kept.exceptAll(kept.orderBy("event_id").limit(1))
        return real(self, changed, recent, users, max_len, path, *rest)

    monkeypatch.setattr(SparkEngine, "_write_requests", faulty)
    return SparkEngine(request.getfixturevalue("spark"))


@pytest.mark.parametrize("double", [False, True], ids=["lost", "doubled"])
@pytest.mark.parametrize("name", ENGINES)
def test_a_lost_or_doubled_target_fails_the_balance_and_commits_nothing(name, double, raw, tmp_path, request,
                                                                         monkeypatch):
    out = tmp_path / "out"
    engine = _engine_losing_a_row(name, request, monkeypatch, double)
    with pytest.raises(AccountingError, match="rows read"):
        build(engine, BuildConfig(str(raw), str(out), SAMPLE_START), log=lambda m: None)
    assert not BuildLayout(str(out)).is_built(LocalStorage(), SAMPLE_START)
    monkeypatch.undo()  # the real engine balances on the same input
    from longseq.etl.batch.polars_engine import PolarsEngine

    report = build(PolarsEngine(), BuildConfig(str(raw), str(out), SAMPLE_START), log=lambda m: None)[0]
    assert report["rows_read"] == report["targets"] + sum(report["quarantined"].values()) + report["duplicates"]
