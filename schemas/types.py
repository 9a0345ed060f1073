"""The small type vocabulary every longseq record is written in.

A contract is a tuple of `Field`s whose types are `Scalar`s or `ListOf(Scalar)`. The
backend forms (Arrow, Spark, polars, Petastorm) are derived from these in `schemas.forms`;
nothing else in the code base spells a column type.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Mapping, Union


@dataclass(frozen=True)
class Scalar:
    """A primitive column type, named as Arrow names it."""

    name: str  # one of SCALAR_NAMES

    def __post_init__(self) -> None:
        if self.name not in SCALAR_NAMES:
            raise ValueError(f"unknown scalar type {self.name!r}; expected one of {SCALAR_NAMES}")

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class ListOf:
    """A variable-length list of non-null scalars (histories, targets)."""

    element: Scalar
    element_nullable: bool = False

    def __str__(self) -> str:
        return f"list<{self.element}{'' if not self.element_nullable else '?'}>"


DType = Union[Scalar, ListOf]

SCALAR_NAMES = ("string", "int8", "int32", "int64", "float32", "float64")
STRING, INT8, INT32, INT64, FLOAT32, FLOAT64 = (Scalar(n) for n in SCALAR_NAMES)


@dataclass(frozen=True)
class Field:
    """One column.

    `nullable` is the physical property written to Parquet. `required` is the contract:
    a row whose required column is null is invalid (and quarantined by the ETL). Raw logs
    are untrusted, so their columns are physically nullable but mostly required.
    """

    name: str
    dtype: DType
    nullable: bool = False
    required: bool = True
    doc: str = ""


@dataclass(frozen=True)
class Schema:
    """A named, ordered set of fields: one data contract."""

    name: str
    fields: tuple[Field, ...]
    doc: str = ""

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"schema {self.name}: duplicate columns {sorted(dupes)}")

    def renamed(self, names: Mapping[str, str] | None) -> "Schema":
        """This contract with its columns under other names (`names`: its name -> the other;
        a dataset spec's `columns`, for the raw logs' own names)."""
        if not names:
            return self
        return Schema(self.name, tuple(replace(f, name=names.get(f.name, f.name)) for f in self.fields), self.doc)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def required_names(self) -> list[str]:
        return [f.name for f in self.fields if f.required]

    def __iter__(self) -> Iterator[Field]:
        return iter(self.fields)

    def __getitem__(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"schema {self.name} has no column {name!r}")

    def __contains__(self, name: object) -> bool:
        return any(f.name == name for f in self.fields)
