"""Which columns and value checks the validation suites derive from a dataset spec: shared
by the suites (etl/gates/validation.py) and the frames of both engines (Spark there,
polars in etl/gates/local_frames.py), so that a check has one name whichever runs it."""

from __future__ import annotations

from longseq.schemas.contracts import DEFAULT_SPEC, HIST_PREFIX, TGT_PREFIX, contracts_of
from longseq.schemas.spec import DatasetSpec, Feature


def list_columns(spec: DatasetSpec, prefix: str) -> list[str]:
    """The request record's hist_* or tgt_* list columns of a spec, features included."""
    c = contracts_of(spec)
    return list(c.history_columns if prefix == HIST_PREFIX else c.target_columns)


def feature_list_columns(spec: DatasetSpec) -> list[tuple[str, Feature]]:
    """(record column, feature) of every side feature, history first."""
    return [(f"{prefix}{f.name}", f) for side, prefix in (("history", HIST_PREFIX), ("target", TGT_PREFIX))
            for f in spec.features_on(side)]


def feature_check_name(column: str, feature: Feature) -> str:
    """categorical ids are never negative (the model hashes them); numbers are finite."""
    return f"{'nonnegative' if feature.kind == 'categorical' else 'finite'}_{column}"


def checks_actions(spec: DatasetSpec) -> bool:
    """Whether the records suite checks the range of the action flags: for every spec but
    the default, whose suites stay as they were before specs (the same outcomes)."""
    return spec.fingerprint != DEFAULT_SPEC.fingerprint
