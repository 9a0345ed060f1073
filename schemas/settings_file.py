"""Reading a settings file (YAML or JSON) into a dataclass's fields, with one-line errors.

Every config read from a file goes through `load_settings` (or `typed_settings` for a
mapping already read): each value is checked against its field's type hint and converted
as a user means it. YAML 1.1 reads `3e-3` and `1e5` as strings (its floats need a dot and
a signed exponent), so a numeric string is a number for a numeric field:

    float field   3e-3, 1e5, 1_000, 2 (an integer)        -> float
    int field     1_000, 1e5, 100000.0 (integral values)   -> int; 2.5 is an error
    bool field    true/false only (not 0/1, not "yes" in quotes)
    str field     a string only (a number there is an error: quote it)
    X | None      null, or an X;  tuple[X, ...] / list[X] from a list;  dict[K, V] from a mapping
    Literal[...]  one of its values

A dataclass field whose `metadata["settings"]` names another dataclass holds a mapping of
some of that class's fields (TrainConfig.model: ModelConfig's), checked the same way.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from longseq.schemas.errors import LongseqError

# a decimal number as people write it: 3e-3, 1e5, -0.5, 1_000, .5
_NUMBER = re.compile(r"[-+]?(\d(_?\d)*(\.(\d(_?\d)*)?)?|\.\d(_?\d)*)([eE][-+]?\d+)?")


class SettingsError(LongseqError):
    """A settings file that is unreadable, or holds an unknown key or a value of the wrong type."""


def yaml_error_text(error: Exception, path: Path | str) -> str:
    """A YAML error in one line, naming the file where PyYAML says "<unicode string>"."""
    return " ".join(str(error).replace('"<unicode string>"', f'"{path}"').split())


def load_mapping(path: Path | str, allowed: set[str], what: str) -> dict:
    """A YAML/JSON file holding a mapping with only `allowed` keys, or a one-line error."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SettingsError(f"cannot read {what} {path}: {yaml_error_text(e, path)}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: a {what} file must hold a mapping of settings")
    unknown = set(data) - allowed
    if unknown:
        raise SettingsError(f"{path}: unknown {what} keys {sorted(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return data


def load_settings(cls: type, path: Path | str, what: str) -> dict:
    """The settings in a file, as `cls`'s fields of their declared types (a dict to pass to
    cls(**...), with flags on top); a one-line error naming the file and field otherwise."""
    data = load_mapping(path, {f.name for f in dataclasses.fields(cls)}, what)
    return typed_settings(cls, data, str(path))


def typed_settings(cls: type, mapping: Mapping[str, Any], source: str, prefix: str = "",
                   given: frozenset[str] = frozenset()) -> dict:
    """`mapping`'s values converted to the types of cls's fields of the same names.

    source names the file in errors (`train.yaml: lr: expected a float, got 'abc'`);
    prefix is the path of a nested mapping (`model.`); given: fields the caller sets
    itself, which the mapping may not hold (nor an error list as allowed)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in given}
    unknown = set(mapping) - set(fields)
    if unknown:
        where = f"{source}: {prefix.rstrip('.')}: " if prefix else f"{source}: "
        raise SettingsError(f"{where}unknown keys {sorted(map(str, unknown))}; allowed: {', '.join(sorted(fields))}")
    out = {}
    for name, value in mapping.items():
        nested = fields[name].metadata.get("settings")
        if nested is not None and isinstance(value, Mapping):
            out[name] = typed_settings(nested, value, source, f"{prefix}{name}.")
        else:
            out[name] = _convert(value, hints[name], f"{prefix}{name}", source)
    return out


def _fail(source: str, where: str, expected: str, value: Any) -> SettingsError:
    return SettingsError(f"{source}: {where}: expected {expected}, got {value!r}")


def _describe(hint: Any) -> str:
    """A type hint in words, for errors."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
        return f"a list ({'each ' + _describe(args[0]) if args else 'of values'})"
    if origin is dict or hint is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a float", str: "a string"}.get(
        hint, f"a {getattr(hint, '__name__', hint)}")


def _number(value: Any) -> float | int | None:
    """value as a number if it is one (not a bool) or a string spelling one; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        text = value.strip().replace("_", "")
        try:
            return int(text)
        except ValueError:
            return float(text)
    return None


def _convert(value: Any, hint: Any, where: str, source: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, where, source)
            except SettingsError:
                continue
        raise _fail(source, where, _describe(hint), value)
    if origin is typing.Literal:
        if value in args:
            return value
        raise _fail(source, where, _describe(hint), value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _fail(source, where, _describe(hint), value)
    if hint is int:
        number = _number(value)
        # an integral float (1e5 read as 100000.0) is the integer it spells; 2.5 is not one
        if isinstance(number, float) and number.is_integer():
            return int(number)
        if isinstance(number, int):
            return number
        raise _fail(source, where, _describe(hint), value)
    if hint is float:
        number = _number(value)
        if number is None:
            raise _fail(source, where, _describe(hint), value)
        return float(number)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _fail(source, where, f"{_describe(hint)} (quote it)", value)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _fail(source, where, _describe(hint), value)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _fail(source, where, _describe(hint), value)
            items = [_convert(v, a, f"{where}[{i}]", source) for i, (v, a) in enumerate(zip(value, args))]
        else:
            item = args[0] if args else Any
            items = [_convert(v, item, f"{where}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise _fail(source, where, _describe(hint), value)
        key, val = args if args else (Any, Any)
        return {_convert(k, key, where, source): _convert(v, val, f"{where}.{k}", source) for k, v in value.items()}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, Mapping):
            raise _fail(source, where, "a mapping", value)
        return hint(**typed_settings(hint, value, source, f"{where}."))
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        if hint is Path and isinstance(value, str):
            return Path(value)
        raise _fail(source, where, _describe(hint), value)
    return value  # a hint this function does not know: left to the class's own checks
