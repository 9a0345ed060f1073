"""Which dataset spec a build output holds: DATA/spec.yaml, written by its first build.

Every later command on DATA (build, validate, publish, train, evaluate) reads its spec from
there, and one given explicitly (--spec) must agree with it: records of one spec read with
another would put a price where a category belongs. An output without the file was built
before specs existed, with the default spec.
"""

from __future__ import annotations

import yaml

from longseq.dataset.layout import BuildLayout
from longseq.dataset.storage import Storage
from longseq.schemas.contracts import DEFAULT_SPEC
from longseq.schemas.settings_file import yaml_error_text
from longseq.schemas.spec import DatasetSpec, SpecError, resolve_spec, spec_from_dict

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


def check_same_spec(recorded: DatasetSpec, wanted: DatasetSpec, where: str) -> None:
    """SpecError unless `wanted` builds the records `recorded` does (DatasetSpec.fingerprint)."""
    if recorded.fingerprint != wanted.fingerprint:
        raise SpecError(
            f"{where} holds data of dataset spec {recorded.name!r} ({recorded.fingerprint}), not of "
            f"{wanted.name!r} ({wanted.fingerprint}): use the spec it was built with, or another output directory"
        )


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


def check_output_spec(storage: Storage, data: str, spec: DatasetSpec) -> None:
    """SpecError when DATA already holds data (or a spec record) of another spec; a new output takes any."""
    if storage.exists(spec_path(data)) or storage.exists(f"{data.rstrip('/')}/requests"):
        check_same_spec(recorded_spec(storage, data), spec, data)


def record_spec(storage: Storage, data: str, spec: DatasetSpec) -> None:
    """Write DATA/spec.yaml on the first build; refuse a build with another spec later."""
    check_output_spec(storage, data, spec)
    path = spec_path(data)
    if storage.exists(path):
        return
    storage.write_text(path, f"# the dataset spec this output was built with (docs/SPEC.md)\n"
                             f"{yaml.safe_dump(spec.to_dict(), sort_keys=False)}")
