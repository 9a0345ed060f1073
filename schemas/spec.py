"""A dataset spec: one YAML file that says what a team's logs hold, and what to learn from them.

Every contract (schemas/contracts.py), both build engines, the quarantine rules, the
validation suites, the reader and the model derive from it (docs/SPEC.md):

    name: ecommerce
    columns: {item_id: product_id, click: isClick}   # the logs' own names of any raw column
    tasks: [click, cart, purchase]        # binary label columns: action bits, heads, metrics
    inputs:                               # raw columns besides the ids, the times and the labels
      category_id: {type: int64, required: true}
      price: {type: float32}
      dwell_ms: {type: int32}
    derived:                              # numbers computed from inputs, per row
      price_per_ms: {ratio: [price, dwell_ms]}
    features:                             # what the model sees, on history events and/or targets
      category: {kind: categorical, source: category_id, buckets: 4096, sides: [history, target]}
      price: {kind: numeric, transform: bucketize, boundaries: [5, 20, 100], sides: [target]}

The default spec (schemas/specs/default.yaml) is the Douyin-shaped contract longseq began
with: four tasks, no side features, play_ms and duration_ms read and left unused.

Records store each feature's plain value (a categorical id as int64, a number as float32);
the model hashes, buckets or normalises them, so the same records serve other transforms.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from longseq.schemas.errors import LongseqError

SPECS_DIR = Path(__file__).resolve().parent / "specs"
DEFAULT_SPEC_FILE = SPECS_DIR / "default.yaml"

# The columns every spec has: the ids and times the history semantics are defined on.
ID_TIME_COLUMNS: dict[str, str] = {
    "event_id": "string", "request_id": "string", "user_id": "int64", "request_ts": "int64",
    "item_id": "int64", "author_id": "int64", "position": "int32", "event_ts": "int64",
}
# Names the derived contracts use themselves: no task, input or feature may take them.
RESERVED = frozenset({*ID_TIME_COLUMNS, "action", "reason", "ds", "seq"})
# Labels and features become tgt_/hist_ columns, beside the compact layout's own hist_end,
# hist_len and tgt_count (schemas/contracts.py user_day).
LAYOUT_NAMES = frozenset({"end", "len", "count"})
SIDES = ("history", "target")
KINDS = ("categorical", "numeric")
TRANSFORMS = ("normalize", "log", "bucketize")
INPUT_TYPES = ("int8", "int32", "int64", "float32", "float64")
INTEGER_TYPES = ("int8", "int32", "int64")
# A history event's labels are packed into one int32 of action bits, and the model embeds
# each distinct combination: 2**16 rows is the largest table that stays cheap.
MAX_TASKS = 16
# A spec's own names become record columns (hist_<name>, tgt_<name>) and Python, Spark and
# SQL identifiers unquoted: lower case snake_case keeps them valid everywhere.
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_RAW_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")  # a raw log's own column names: camelCase too
# The logs' names no column may take: ds is the partition column (RAW/ds=YYYY-MM-DD) that
# Spark adds to what it reads of a partitioned directory; quarantine files, which keep the
# logs' names, add reason.
RESERVED_RAW = {"ds": "the partition column of the raw logs (RAW/ds=YYYY-MM-DD)",
                "reason": "the quarantine's column of the rule a row broke"}


class SpecError(LongseqError):
    """A dataset spec that cannot be read, or that contradicts itself or the data."""


@dataclass(frozen=True)
class Input:
    """A raw-log column besides the ids, the times and the labels."""

    name: str
    type: str = "int64"  # one of INPUT_TYPES
    required: bool = False  # a null quarantines the row (missing_<name>); else it reads as 0
    doc: str = ""


@dataclass(frozen=True)
class Derived:
    """A number computed from two inputs of the same row: numerator / denominator,
    0 where either is null or the denominator is not positive."""

    name: str
    ratio: tuple[str, str]


@dataclass(frozen=True)
class Feature:
    """What the model sees of an input or derived value, on history events, targets or both.

    categorical: the integer value, hashed into `buckets` embedding rows.
    numeric:     the value as float32, then normalize ((x - mean) / std) or log (log1p of
                 max(x, 0)), both projected together; or bucketize (by `boundaries`) into
                 its own embedding table.
    """

    name: str
    kind: str  # categorical | numeric
    source: str = ""  # the input or derived value; default: the feature's own name
    sides: tuple[str, ...] = SIDES  # not `on`: YAML 1.1 reads a bare on as true
    buckets: int = 1 << 12
    transform: str = "normalize"
    mean: float = 0.0
    std: float = 1.0
    boundaries: tuple[float, ...] = ()
    doc: str = ""

    def __post_init__(self) -> None:
        if not self.source:  # spelt out, so that an implicit and an explicit source are one spec
            object.__setattr__(self, "source", self.name)

    @property
    def embedded(self) -> bool:
        """An embedding table (categorical, bucketized) rather than a projected number."""
        return self.kind == "categorical" or self.transform == "bucketize"

    @property
    def table_rows(self) -> int:
        return self.buckets if self.kind == "categorical" else len(self.boundaries) + 1

    @property
    def stored_type(self) -> str:
        return "int64" if self.kind == "categorical" else "float32"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    tasks: tuple[str, ...]
    inputs: tuple[Input, ...] = ()
    derived: tuple[Derived, ...] = ()
    features: tuple[Feature, ...] = ()
    # (raw column: an id or time column, a task or an input; the logs' name for it) where the
    # logs name it otherwise: renamed as read, and everything after the read uses the spec's names
    columns: tuple[tuple[str, str], ...] = ()
    source: str = field(default="", compare=False)  # the file it came from, for errors

    def __post_init__(self) -> None:
        _check(self)

    def features_on(self, side: str) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if side in f.sides)

    def input(self, name: str) -> Input:
        return next(i for i in self.inputs if i.name == name)

    @property
    def raw_columns(self) -> tuple[str, ...]:
        """The columns a raw log holds, by the spec's names: the ids and times, the inputs, the labels."""
        return (*ID_TIME_COLUMNS, *(i.name for i in self.inputs), *self.tasks)

    @property
    def raw_names(self) -> dict[str, str]:
        """The spec's name -> the raw logs' name, for the raw columns the logs name otherwise."""
        return dict(self.columns)

    def to_dict(self) -> dict[str, Any]:
        """The spec as its YAML file would hold it, every default spelt out."""
        return {
            "name": self.name,
            "columns": dict(self.columns),
            "tasks": list(self.tasks),
            "inputs": {i.name: {"type": i.type, "required": i.required, "doc": i.doc} for i in self.inputs},
            "derived": {d.name: {"ratio": list(d.ratio)} for d in self.derived},
            "features": {f.name: _feature_dict(f, docs=True) for f in self.features},
        }

    @property
    def fingerprint(self) -> str:
        """What the records hold: the tasks, the inputs, the derived values and each feature's
        name, kind, source and sides. Two specs that build the same records share it, whatever
        their names, docs or model-side settings (buckets, transforms): builds, manifests and
        readers compare this one, so one build serves models of other transforms."""
        return _digest([
            list(self.tasks),
            [[i.name, i.type, i.required] for i in self.inputs],
            [[d.name, list(d.ratio)] for d in self.derived],
            [[f.name, f.kind, f.source or f.name, list(f.sides)] for f in self.features],
        ])

    @property
    def model_fingerprint(self) -> str:
        """Everything but the name and the docs: two specs that build the same model share it
        (a checkpoint records its model's spec, and a resume must agree with it)."""
        return _digest([self.fingerprint, [[f.name, _feature_dict(f)] for f in self.features]])


def _digest(canonical: Any) -> str:
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()[:16]


def _feature_dict(f: Feature, docs: bool = False) -> dict[str, Any]:
    d = {k: v for k, v in asdict(f).items() if k != "name" and (docs or k != "doc")}
    d["source"], d["sides"], d["boundaries"] = f.source or f.name, list(f.sides), list(f.boundaries)
    return d


# ---------------------------------------------------------------- reading


def load_spec(path: Path | str) -> DatasetSpec:
    """The spec in a YAML (or JSON) file; SpecError naming the file and the field otherwise."""
    import yaml

    from longseq.schemas.settings_file import yaml_error_text

    try:
        data = yaml.load(Path(path).read_text(), Loader=_unique_keys_loader())
    except (OSError, yaml.YAMLError) as e:
        raise SpecError(f"cannot read dataset spec {path}: {yaml_error_text(e, path)}") from None
    return spec_from_dict(data, str(path))


@functools.cache
def _unique_keys_loader() -> type:
    """yaml's SafeLoader, but a key given twice in one mapping is an error: YAML keeps the
    last silently, so a second `price:` would replace the first without a word."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):  # type: ignore[override]
            keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
            repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{', '.join(map(repr, repeated))} is a duplicated name", node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeys


def spec_from_dict(data: Any, source: str = "spec") -> DatasetSpec:
    """A DatasetSpec from its mapping form (load_spec's file, or to_dict's output)."""
    from longseq.schemas.settings_file import SettingsError, typed_settings

    if not isinstance(data, Mapping):
        raise SpecError(f"{source}: a dataset spec must be a mapping with name, tasks, inputs, derived, features")
    allowed = {"name", "columns", "tasks", "inputs", "derived", "features"}
    unknown = set(data) - allowed
    if unknown:
        raise SpecError(f"{source}: unknown keys {sorted(map(str, unknown))}; allowed: {', '.join(sorted(allowed))}")
    for key in ("name", "tasks"):
        if key not in data:
            raise SpecError(f"{source}: {key}: missing")

    def section(key: str, cls: type) -> tuple:
        entries = data.get(key) or {}
        if not isinstance(entries, Mapping):
            raise SpecError(f"{source}: {key}: expected a mapping of name -> settings, got {entries!r}")
        out = []
        for name, settings in entries.items():
            settings = {} if settings is None else settings
            if not isinstance(settings, Mapping):
                raise SpecError(f"{source}: {key}.{name}: expected a mapping of settings, got {settings!r}")
            if "name" in settings:
                raise SpecError(f"{source}: {key}.{name}: the name is the key; remove 'name'")
            try:
                out.append(cls(name=str(name), **typed_settings(cls, settings, source, f"{key}.{name}.",
                                                                given=frozenset({"name"}))))
            except SettingsError as e:
                raise SpecError(str(e)) from None
        return tuple(out)

    tasks = data["tasks"]
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise SpecError(f"{source}: tasks: expected a list of label column names, got {tasks!r}")
    if not isinstance(data["name"], str):
        raise SpecError(f"{source}: name: expected a string, got {data['name']!r}")
    columns = data.get("columns") or {}
    if not isinstance(columns, Mapping) or not all(isinstance(v, str) for v in columns.values()):
        raise SpecError(f"{source}: columns: expected a mapping of raw column -> the logs' name for it, "
                        f"got {columns!r}")
    return DatasetSpec(
        name=data["name"], tasks=tuple(tasks), inputs=section("inputs", Input), derived=section("derived", Derived),
        features=section("features", Feature), columns=tuple((str(k), v) for k, v in columns.items()), source=source,
    )


# ---------------------------------------------------------------- consistency


def _not_an_input(spec: DatasetSpec, name: str, known: list[str]) -> str:
    if name in spec.tasks:
        return f"{name!r} is a label: a value made of a label leaks it"
    if name in ID_TIME_COLUMNS:
        return f"{name!r} is an id or time column, which the records carry already; a feature reads an input"
    return f"unknown column {name!r}; the inputs{' and derived values' if spec.derived else ''} are {known or 'none'}"


_DEFAULT_FEATURE = Feature(name="x", kind="categorical")
# a feature's settings and the features they apply to: another value elsewhere is a mistake
_SETTINGS_FOR = {
    "buckets": lambda f: f.kind == "categorical",
    "transform": lambda f: f.kind == "numeric",
    "mean": lambda f: f.kind == "numeric" and f.transform == "normalize",
    "std": lambda f: f.kind == "numeric" and f.transform == "normalize",
    "boundaries": lambda f: f.kind == "numeric" and f.transform == "bucketize",
}
# the settings only the model reads: records hold the plain value whatever they are
MODEL_SETTINGS = tuple(_SETTINGS_FOR)


def _check_columns(spec: DatasetSpec, fail: Callable[[str, str], None]) -> None:
    """`columns` renames raw columns only, each to a name no other column of the logs has."""
    raw_columns = spec.raw_columns
    # the logs' names given so far: the columns not renamed, then each renamed one in turn, so
    # that a name given twice is reported where it is given the second time
    logged = {c: c for c in raw_columns if c not in spec.raw_names}
    for column, raw in spec.columns:
        where = f"columns.{column}"
        if column not in raw_columns:
            fail(where, f"{column!r} is not a raw column of the spec; those that can be renamed are "
                        f"{', '.join(raw_columns)}")
        if not _RAW_NAME.fullmatch(raw):
            fail(where, f"{raw!r} is not a column name (letters, digits, _ and ., not starting with a digit)")
        if raw.lower() in RESERVED_RAW:
            fail(where, f"{raw!r} is reserved: it is {RESERVED_RAW[raw.lower()]}")
        # Spark matches column names regardless of case, so 'userId' and 'userid' are one column to it
        other = next((c for c, name in logged.items() if name.lower() == raw.lower()), None)
        if other is not None:
            if logged[other] != raw:
                fail(where, f"{raw!r} and {logged[other]!r}, the logs' name of {other!r}, differ only in case, "
                            "which Spark does not tell apart")
            fail(where, f"{raw!r} is the logs' name of {other!r} too" if other in spec.raw_names else
                 f"{raw!r} is the logs' name of the raw column {other!r} already (columns does not rename it)")
        logged[column] = raw


def _check(spec: DatasetSpec) -> None:
    src = spec.source or f"spec {spec.name!r}"

    def fail(where: str, message: str) -> None:
        raise SpecError(f"{src}: {where}: {message}")

    if not spec.tasks:
        fail("tasks", "at least one binary label column is needed")
    if len(spec.tasks) > MAX_TASKS:
        fail("tasks", f"{len(spec.tasks)} tasks, but the action bits hold at most {MAX_TASKS}")
    seen: dict[str, str] = {}
    named = [("tasks", t) for t in spec.tasks] + [("inputs", i.name) for i in spec.inputs] \
        + [("derived", d.name) for d in spec.derived]
    for section, name in named:
        where = f"{section}.{name}" if section != "tasks" else f"tasks[{spec.tasks.index(name)}]"
        if not _NAME.fullmatch(name):
            fail(where, f"{name!r} is not a column name (lower case letters, digits and _)")
        if name in RESERVED or (section == "tasks" and name in LAYOUT_NAMES):
            fail(where, f"{name!r} is reserved (an id or time column, or one the records use)")
        if name in seen:
            fail(where, f"{name!r} is a duplicated name (also in {seen[name]})")
        seen[name] = section
    _check_columns(spec, fail)
    for i in spec.inputs:
        if i.type not in INPUT_TYPES:
            fail(f"inputs.{i.name}.type", f"{i.type!r} is not one of {', '.join(INPUT_TYPES)}")
    inputs = {i.name: i for i in spec.inputs}
    for d in spec.derived:
        for part in d.ratio:
            if part not in inputs:
                fail(f"derived.{d.name}.ratio", _not_an_input(spec, part, sorted(inputs)))
    values = {**{i.name: i.type for i in spec.inputs}, **{d.name: "float32" for d in spec.derived}}
    feature_names: set[str] = set()
    for f in spec.features:
        where = f"features.{f.name}"
        if not _NAME.fullmatch(f.name):
            fail(where, f"{f.name!r} is not a column name (lower case letters, digits and _)")
        if f.name in RESERVED or f.name in LAYOUT_NAMES:
            fail(where, f"{f.name!r} is reserved (an id or time column, or one the records use)")
        if f.name in spec.tasks:
            fail(where, f"{f.name!r} is a duplicated name (a label)")
        if f.name in feature_names:
            fail(where, f"{f.name!r} is a duplicated name")
        feature_names.add(f.name)
        source = f.source or f.name
        if source not in values:
            fail(f"{where}.source", _not_an_input(spec, source, sorted(values)))
        if f.kind not in KINDS:
            fail(f"{where}.kind", f"{f.kind!r} is not one of {', '.join(KINDS)}")
        if not f.sides:
            fail(f"{where}.sides", "the feature is on neither history nor target: list history, target or both")
        for side in f.sides:
            if side not in SIDES:
                fail(f"{where}.sides", f"{side!r} is not one of {', '.join(SIDES)}")
        if len(set(f.sides)) != len(f.sides):
            fail(f"{where}.sides", f"{list(f.sides)} names a side twice")
        for setting, applies in _SETTINGS_FOR.items():
            if getattr(f, setting) != getattr(_DEFAULT_FEATURE, setting) and not applies(f):
                fail(f"{where}.{setting}", f"does not apply to a {f.kind} feature"
                     + (f" with transform {f.transform}" if f.kind == "numeric" else ""))
        if f.kind == "categorical":
            if values[source] not in INTEGER_TYPES:
                fail(f"{where}.source", f"a categorical feature needs an integer column, {source!r} is {values[source]}")
            if f.buckets < 2:
                fail(f"{where}.buckets", f"need at least 2 (row 0 is padding), got {f.buckets}")
        else:
            if f.transform not in TRANSFORMS:
                fail(f"{where}.transform", f"{f.transform!r} is not one of {', '.join(TRANSFORMS)}")
            if f.transform == "normalize" and not f.std > 0:
                fail(f"{where}.std", f"must be positive, got {f.std}")
            if f.transform == "bucketize" and (not f.boundaries or list(f.boundaries) != sorted(set(f.boundaries))):
                fail(f"{where}.boundaries", f"need a strictly increasing list, got {list(f.boundaries)}")


# ---------------------------------------------------------------- differences


def spec_differences(a: DatasetSpec, b: DatasetSpec, side: Literal["data", "model"] = "data") -> list[str]:
    """What `b` sets otherwise than `a`, one short `path old -> new` a field, for messages.

    side "data": what the records hold, so [] exactly when the fingerprints agree
    (`tasks [click, cart] -> [click, cart, purchase]`, `inputs.price_cents.type int64 -> int32`,
    `features.brand added`). side "model": the model-side settings of the features both
    have (`features.price_bucket.boundaries [500, 1000] -> [500, 2000]`). Names, docs and
    `columns` (how the logs are read, not what the records hold) are neither side."""
    if side == "model":
        theirs = {f.name: f for f in b.features}
        return [_changed(f"features.{f.name}.{k}", getattr(f, k), getattr(theirs[f.name], k))
                for f in a.features if f.name in theirs for k in MODEL_SETTINGS
                if getattr(f, k) != getattr(theirs[f.name], k)]
    if side != "data":
        raise ValueError(f"side is 'data' or 'model', not {side!r}")
    return ([] if a.tasks == b.tasks else [_changed("tasks", a.tasks, b.tasks)]) \
        + _section_differences("inputs", a.inputs, b.inputs, ("type", "required")) \
        + _section_differences("derived", a.derived, b.derived, ("ratio",)) \
        + _section_differences("features", a.features, b.features, ("kind", "source", "sides"))


def _section_differences(section: str, old: tuple, new: tuple, fields: tuple[str, ...]) -> list[str]:
    olds, news = {e.name: e for e in old}, {e.name: e for e in new}
    out = [f"{section}.{n} removed" for n in olds if n not in news] + [f"{section}.{n} added" for n in news if n not in olds]
    out += [_changed(f"{section}.{n}.{k}", getattr(olds[n], k), getattr(news[n], k))
            for n in olds if n in news for k in fields if getattr(olds[n], k) != getattr(news[n], k)]
    kept_old, kept_new = [n for n in olds if n in news], [n for n in news if n in olds]
    if kept_old != kept_new:  # the fingerprint follows the order: the records' columns do
        out.append(_changed(f"{section} order", kept_old, kept_new))
    return out


def _changed(path: str, old: Any, new: Any) -> str:
    return f"{path} {_shown(old)} -> {_shown(new)}"


def _shown(value: Any, limit: int = 60) -> str:
    """A value as the YAML file spells it (500, not 500.0), cut short where long."""
    if isinstance(value, (list, tuple)):
        text = f"[{', '.join(_shown(v, 0) for v in value)}]"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        text = str(int(value))
    else:
        text = str(value)
    return text if not limit or len(text) <= limit else text[:limit - 3] + "..."


@functools.cache
def load_default_spec() -> DatasetSpec:
    """The default spec, read once: every caller shares the one object."""
    return load_spec(DEFAULT_SPEC_FILE)


def resolve_spec(spec: DatasetSpec | Path | str | None) -> DatasetSpec:
    """A spec object, a path to one, or None for the default."""
    if spec is None:
        return load_default_spec()
    if isinstance(spec, DatasetSpec):
        return spec
    return load_spec(spec)
