"""The docs say what the code does: README's tables are the command line's own, and every
`longseq ...` command shown in the user docs uses only flags that command has."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from longseq.bench import BENCHMARKS, bench_module, bench_parser
from longseq.cli.main import build_parser, commands

REPO = Path(__file__).resolve().parents[1]
USER_DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
HISTORY = {"BENCHMARKS_HISTORY.md"}  # results as they were run, with the flags of their day
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
COMMAND = re.compile(r"(?<![\w/-])longseq (bench )?([a-z][a-z-]*)")


def _table(text: str, heading: str) -> list[tuple[str, str]]:
    """The rows of the markdown table whose header row starts with `heading`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {heading}"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append((cells[0].strip("`"), cells[1]))
    return rows


def test_the_readme_command_tables_are_the_command_lines():
    text = (REPO / "README.md").read_text()
    assert _table(text, "command |") == [(f"longseq {c.name}", c.help) for c in commands()]
    assert _table(text, "benchmark") == [(name, what) for name, (_, what) in BENCHMARKS.items()]


def _parsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    found = dict(sub.choices)
    found.update({f"bench {n}": bench_parser(n, None, bench_module(n).arguments) for n in BENCHMARKS})
    return found


def shown_commands(text: str) -> list[tuple[str, list[str]]]:
    """(command, flags) of each `longseq COMMAND ...` shown as code in a text (a code span, a
    fenced or an indented block): the flags up to the end of its span or line (a line ending
    in a backslash goes on), or up to the next command."""
    text = re.sub(r"\\\n\s*", " ", text)
    found, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        block = fenced or line.startswith("    ")
        matches = [m for m in COMMAND.finditer(line) if block or line[:m.start()].count("`") % 2 == 1]
        for k, m in enumerate(matches):
            end = matches[k + 1].start() if k + 1 < len(matches) else len(line)
            rest = line[m.end():end]
            if not block and "`" in rest:  # inside a code span: up to its end
                rest = rest[:rest.index("`")]
            name = f"bench {m.group(2)}" if m.group(1) else m.group(2)
            found.append((name, FLAG.findall(rest)))
    return found


MODULES = sorted([*REPO.glob("bench/*.py"), *REPO.glob("cli/*.py"), *REPO.glob("trainer/*.py")])


def _text(doc: Path) -> str:
    """A markdown file, or a module's docstring (its usage lines are docs too)."""
    if doc.suffix != ".py":
        return doc.read_text()
    import ast

    return ast.get_docstring(ast.parse(doc.read_text()), clean=False) or ""


@pytest.mark.parametrize("doc", [d for d in USER_DOCS if d.name not in HISTORY] + MODULES,
                         ids=lambda d: str(d.relative_to(REPO)))
def test_commands_in_the_docs_use_flags_the_commands_have(doc):
    parsers = _parsers()
    wrong = []
    for name, flags in shown_commands(_text(doc)):
        if name not in parsers:
            if name.split()[-1] not in ("NAME", "bench") and not name.startswith("bench NAME"):
                wrong.append(f"longseq {name}: no such command")
            continue
        have = {s for a in parsers[name]._actions for s in a.option_strings}
        wrong += [f"longseq {name} {f}" for f in flags if f not in have]
    assert wrong == []


def test_the_check_finds_a_flag_a_command_does_not_have():
    shown = shown_commands("longseq turns logs into records: run `longseq score --run-dir r --out x` then\n"
                           "    longseq build --raw r \\\n  --workdir w")
    assert shown == [("score", ["--run-dir", "--out"]), ("build", ["--raw", "--workdir"])]
