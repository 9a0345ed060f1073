"""Reading a settings file (YAML or JSON) into a mapping, with one-line errors."""

from __future__ import annotations

from pathlib import Path

from schemas.errors import LongseqError


def load_mapping(path: Path | str, allowed: set[str], what: str) -> dict:
    """A YAML/JSON file holding a mapping with only `allowed` keys, or a one-line error."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise LongseqError(f"cannot read {what} {path}: {e}") from None
    if not isinstance(data, dict):
        raise LongseqError(f"{path}: a {what} file must hold a mapping of settings")
    unknown = set(data) - allowed
    if unknown:
        raise LongseqError(f"{path}: unknown {what} keys {sorted(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return data
