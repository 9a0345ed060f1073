"""Markdown tables of the contracts, for docs/CONTRACTS.md (generated, never hand-edited).

    python -m schemas.markdown            # print the tables
    python -m schemas.markdown --write    # refresh the generated block in docs/CONTRACTS.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from schemas.contracts import CONTRACTS
from schemas.types import Schema

BEGIN = "<!-- BEGIN GENERATED: python -m schemas.markdown --write -->"
END = "<!-- END GENERATED -->"
DOC = Path(__file__).resolve().parents[1] / "docs" / "CONTRACTS.md"


def contract_table(schema: Schema) -> str:
    lines = [
        f"### `{schema.name}`", "", schema.doc, "",
        "| column | type | nullable | required | meaning |", "|---|---|---|---|---|",
    ]
    for f in schema:
        lines.append(
            f"| {f.name} | {f.dtype} | {'yes' if f.nullable else 'no'} | {'yes' if f.required else 'no'} | {f.doc} |"
        )
    return "\n".join(lines)


def generated_block() -> str:
    return "\n\n".join([BEGIN, *(contract_table(s) for s in CONTRACTS.values()), END])


def refresh(text: str) -> str:
    """text with its generated block replaced by the current one."""
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + generated_block() + text[end:]


if __name__ == "__main__":
    if "--write" in sys.argv:
        DOC.write_text(refresh(DOC.read_text()))
    else:
        print(generated_block())
