"""Markdown tables of the contracts, generated, never hand-edited: docs/CONTRACTS.md holds the
default spec's contracts, docs/SPEC.md the request records of the example specs.

    python -m longseq.schemas.markdown                   # print the default spec's tables
    python -m longseq.schemas.markdown --spec FILE       # print any spec's tables (docs/SPEC.md)
    python -m longseq.schemas.markdown --write           # refresh the generated blocks of both docs
"""

from __future__ import annotations

import sys
from pathlib import Path

from longseq.schemas.contracts import CONTRACTS, contracts_of
from longseq.schemas.spec import SPECS_DIR, load_spec
from longseq.schemas.types import Schema

BEGIN = "<!-- BEGIN GENERATED: python -m longseq.schemas.markdown --write -->"
END = "<!-- END GENERATED -->"
DOCS = Path(__file__).resolve().parents[1] / "docs"
DOC = DOCS / "CONTRACTS.md"
SPEC_DOC = DOCS / "SPEC.md"
SPEC_EXAMPLES = ("ecommerce.yaml", "movielens.yaml")  # whose request records docs/SPEC.md shows


def contract_table(schema: Schema, title: str | None = None) -> str:
    lines = [
        f"### {title or f'`{schema.name}`'}", "", schema.doc, "",
        "| column | type | nullable | required | meaning |", "|---|---|---|---|---|",
    ]
    for f in schema:
        lines.append(
            f"| {f.name} | {f.dtype} | {'yes' if f.nullable else 'no'} | {'yes' if f.required else 'no'} | {f.doc} |"
        )
    return "\n".join(lines)


def generated_block() -> str:
    return "\n\n".join([BEGIN, *(contract_table(s) for s in CONTRACTS.values()), END])


def spec_block() -> str:
    """The raw log and request record of each example spec."""
    tables = []
    for name in SPEC_EXAMPLES:
        c = contracts_of(load_spec(SPECS_DIR / name))
        tables += [contract_table(c.raw_log, f"`{c.spec.name}`: raw_log"),
                   contract_table(c.request_record, f"`{c.spec.name}`: request_record")]
    return "\n\n".join([BEGIN, *tables, END])


def refresh(text: str, block: str | None = None) -> str:
    """text with its generated block replaced by `block` (default: the contracts')."""
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + (block or generated_block()) + text[end:]


if __name__ == "__main__":
    if "--write" in sys.argv:
        DOC.write_text(refresh(DOC.read_text()))
        SPEC_DOC.write_text(refresh(SPEC_DOC.read_text(), spec_block()))
    elif "--spec" in sys.argv:
        contracts = contracts_of(load_spec(sys.argv[sys.argv.index("--spec") + 1]))
        print("\n\n".join(contract_table(s) for s in contracts.all.values()))
    else:
        print(generated_block())
