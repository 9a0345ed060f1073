"""Which dataset spec a build output holds: DATA/spec.yaml, written by its first build.

Every later command on DATA (build, validate, publish, train, evaluate) reads its spec from
there, and one given explicitly (--spec) must build the same records: records of one spec
read with another would put a price where a category belongs. A refusal names the fields
that differ; a build given other model-side settings only warns, naming them. An output
without the file was built before specs existed, with the default spec.
"""

from __future__ import annotations

from typing import Literal

import yaml

from longseq.dataset.layout import BuildLayout
from longseq.dataset.storage import Storage
from longseq.schemas.contracts import DEFAULT_SPEC
from longseq.schemas.settings_file import yaml_error_text
from longseq.schemas.spec import DatasetSpec, SpecError, resolve_spec, spec_differences, spec_from_dict

# differences a message names at most: the first ones tell what happened
SHOWN_DIFFERENCES = 6


def spec_path(data: str) -> str:
    return BuildLayout(data.rstrip("/")).spec_file


def recorded_spec(storage: Storage, data: str) -> DatasetSpec:
    """The spec DATA was built with (the default spec when it records none)."""
    path = spec_path(data)
    if not storage.exists(path):
        return DEFAULT_SPEC
    try:
        content = yaml.safe_load(storage.read_text(path))
    except yaml.YAMLError as e:
        raise SpecError(f"cannot read dataset spec {path}: {yaml_error_text(e, path)}") from None
    return spec_from_dict(content, path)


def spec_summary(spec: DatasetSpec) -> dict:
    """What a report or a manifest says of its spec."""
    return {"name": spec.name, "fingerprint": spec.fingerprint}


def differences_clause(old: DatasetSpec | dict, new: DatasetSpec, *known: DatasetSpec,
                       side: Literal["data", "model"] = "data") -> str:
    """What a message adds after naming two specs by name and fingerprint, `old` first:
    ", which differs in tasks [click] -> [click, cart]; features.brand added" (the fields of
    schemas.spec.spec_differences). `old` may be a report's or a manifest's summary
    (spec_summary): the spec among `known` and the default spec with its fingerprint stands
    for it; "" where none has it, and the two fingerprints have to do."""
    full = old if isinstance(old, DatasetSpec) else next(
        (s for s in (*known, DEFAULT_SPEC) if s.fingerprint == old.get("fingerprint")), None)
    diffs = [] if full is None else spec_differences(full, new, side)
    return f", which differs in {_listed(diffs)}" if diffs else ""


def _listed(diffs: list[str]) -> str:
    more = len(diffs) - SHOWN_DIFFERENCES
    return "; ".join(diffs[:SHOWN_DIFFERENCES]) + (f"; and {more} more" if more > 0 else "")


def check_same_spec(recorded: DatasetSpec, wanted: DatasetSpec, where: str) -> None:
    """SpecError unless `wanted` builds the records `recorded` does (DatasetSpec.fingerprint)."""
    if recorded.fingerprint != wanted.fingerprint:
        raise SpecError(
            f"{where} holds data of dataset spec {recorded.name!r} ({recorded.fingerprint}), not of "
            f"{wanted.name!r} ({wanted.fingerprint}){differences_clause(recorded, wanted)}: use the spec it was "
            f"built with, or another output directory"
        )


def spec_warnings(recorded: DatasetSpec | None, given: DatasetSpec, data: str) -> list[str]:
    """The warnings, a line each, for a build given `given` into an output that records
    `recorded` (None: a new output, which takes `given`): the model-side settings they set
    otherwise, which the build neither uses nor records; and other logs' names (`columns`),
    which this build reads and names its quarantine with, but which DATA does not record."""
    if recorded is None:
        return []
    path, source = spec_path(data), given.source or "the given spec"
    warnings = []
    if diffs := spec_differences(recorded, given, "model"):
        warnings.append(f"warning: {source} differs from {path} in settings only the model reads ({_listed(diffs)}), "
                        f"which a build ignores: {path} keeps its own; to train with them, use "
                        f"`longseq train --spec {given.source or 'FILE'}`")
    old, new = recorded.raw_names, given.raw_names
    if renamed := [f"columns.{c}: {old.get(c, c)} -> {new.get(c, c)}" for c in sorted({*old, *new})
                   if old.get(c, c) != new.get(c, c)]:
        warnings.append(f"warning: {source} names the logs' columns otherwise than {path} ({_listed(renamed)}): this "
                        f"build reads the logs and writes their quarantine under its names, but {path} keeps its own, "
                        f"which `validate --suite raw` reads unless given --spec")
    return warnings


def spec_for(storage: Storage, data: str, wanted: DatasetSpec | str | None = None) -> DatasetSpec:
    """The spec to read DATA with: `wanted` (a spec or its file) when given, which must build
    the records DATA holds (its model-side settings may differ: another transform of the same
    records); otherwise the one DATA records."""
    recorded = recorded_spec(storage, data)
    if wanted is None:
        return recorded
    spec = resolve_spec(wanted)
    check_same_spec(recorded, spec, data)
    return spec


def check_output_spec(storage: Storage, data: str, spec: DatasetSpec) -> DatasetSpec | None:
    """SpecError when DATA already holds data (or a spec record) of another spec; a new output
    takes any. Returns the spec DATA records (None for a new output)."""
    if not (storage.exists(spec_path(data)) or storage.exists(f"{data.rstrip('/')}/requests")):
        return None
    recorded = recorded_spec(storage, data)
    check_same_spec(recorded, spec, data)
    return recorded


def record_spec(storage: Storage, data: str, spec: DatasetSpec) -> None:
    """Write DATA/spec.yaml on the first build; refuse a build with another spec later."""
    check_output_spec(storage, data, spec)
    path = spec_path(data)
    if storage.exists(path):
        return
    storage.write_text(path, f"# the dataset spec this output was built with (docs/SPEC.md)\n"
                             f"{yaml.safe_dump(spec.to_dict(), sort_keys=False)}")
