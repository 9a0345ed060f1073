"""Request records as tests compare them, whichever layout a build wrote.

Builds write the compact layout unless told otherwise; the tests that check what a record
holds read it through `dataset.compact.request_records`, so they check the default
layout's records against their references, and the request layout's where a build asks
for it.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from longseq.dataset.compact import request_records
from longseq.dataset.spec_record import recorded_spec
from longseq.dataset.storage import LocalStorage
from longseq.schemas.contracts import DEFAULT_SPEC, contracts_of
from longseq.schemas.forms import to_arrow
from longseq.schemas.spec import DatasetSpec


def _data_root(path: Path) -> Path | None:
    """DATA of a path under DATA/requests/ (the spec a build records lives there)."""
    for parent in path.parents:
        if parent.name == "requests":
            return parent.parent
    return None


def read_records(path: str | Path, spec: DatasetSpec | None = None) -> pa.Table:
    """The request records (contract 2) of a records file, or of a day's directory (its
    files in name order), of either layout. spec None: the one DATA records."""
    path = Path(path)
    if spec is None:
        root = _data_root(path if path.is_file() else path / "x")
        spec = DEFAULT_SPEC if root is None else recorded_spec(LocalStorage(), str(root))
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    tables = [request_records(pq.read_table(f), spec) for f in files]
    if not tables:
        return to_arrow(contracts_of(spec).request_record).empty_table()
    return pa.concat_tables(tables)


def record_rows(path: str | Path, spec: DatasetSpec | None = None) -> list[dict]:
    """`read_records` as Python rows."""
    return read_records(path, spec).to_pylist()
