"""Imports run one way, in the order the data flows, and no module imports itself back:

    schemas -> dataset, features -> sources, etl, reader -> trainer -> pipelines -> cli -> bench, airflow_dags

Inside etl/, the rooms run one way too: batch <- stream, gates <- stream (the stream closes
days through the batch build and publishes hours through the gates); batch and gates do not
import each other or the stream.

Every project module is imported through the `longseq` namespace it installs under
(`longseq.etl.batch.build`, never a bare `etl.build`, which would load a second copy of the
module, or another distribution's `etl`).

Read from the source (an AST walk over every import statement, also those inside
functions and under TYPE_CHECKING), not from what happens to be imported at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# package -> the packages its modules may import (itself included)
ALLOWED: dict[str, set[str]] = {
    "schemas": {"schemas"},
    "dataset": {"schemas", "dataset"},
    "features": {"schemas", "features"},
    "sources": {"schemas", "dataset", "features", "sources"},
    "etl": {"schemas", "dataset", "features", "etl"},
    "reader": {"schemas", "dataset", "features", "reader"},
    "trainer": {"schemas", "dataset", "features", "reader", "trainer"},
    "pipelines": {"schemas", "dataset", "features", "sources", "etl", "reader", "trainer", "pipelines"},
    "cli": {"schemas", "dataset", "features", "sources", "etl", "reader", "trainer", "pipelines", "cli"},
    "bench": {"schemas", "dataset", "features", "sources", "etl", "reader", "trainer", "pipelines", "cli", "bench"},
    "airflow_dags": {"schemas", "dataset", "pipelines", "airflow_dags"},
}
PACKAGES = set(ALLOWED) | {"tests"}
# etl's rooms -> the rooms they may import (spark_session and the package itself: any room)
ETL_ROOMS: dict[str, set[str]] = {
    "etl.batch": {"etl.batch"},
    "etl.gates": {"etl.gates"},
    "etl.stream": {"etl.stream", "etl.batch", "etl.gates"},
}
NAMESPACE = "longseq."


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path, known: set[str]) -> set[str]:
    """The project modules one file imports, by their folder names (`longseq.etl.batch.build` ->
    `etl.build`; `from pkg import mod` counts as pkg.mod when that is a module)."""
    def own(name: str) -> str:
        return name[len(NAMESPACE):] if name.startswith(NAMESPACE) else ""

    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [own(a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            module = own(node.module)
            names = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in PACKAGES}
    return found


def bare_imports(root: Path) -> list[str]:
    """Project modules imported by their bare folder name instead of through `longseq.`."""
    own = set(ALLOWED) - {"airflow_dags"}
    bad = []
    for pkg in PACKAGES:
        for path in (root / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                bad += [f"{module_name(path, root)} imports {n}" for n in names if n.split(".")[0] in own]
    return sorted(bad)


def import_graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(p, root): p for pkg in PACKAGES for p in (root / pkg).rglob("*.py") if "__pycache__" not in p.parts}
    known = set(files)
    return {name: imports_of(path, root, known) for name, path in files.items()}


def forbidden_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        package = module.split(".")[0]
        if package == "tests":
            continue
        bad += [f"{module} imports {t}" for t in sorted(targets) if t.split(".")[0] not in ALLOWED[package]]
        room = ".".join(module.split(".")[:2])
        if room in ETL_ROOMS:
            bad += [f"{module} imports {t}" for t in sorted(targets)
                    if t.startswith("etl.") and ".".join(t.split(".")[:2]) in ETL_ROOMS
                    and ".".join(t.split(".")[:2]) not in ETL_ROOMS[room]]
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between modules (strongly connected components of more than one
    module, or a module importing itself), by Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(t for t in graph.get(v, ()) if t in graph):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_imports_run_one_way():
    assert forbidden_imports(import_graph(REPO)) == []


def private_imports(root: Path) -> list[str]:
    """Private names (a leading underscore) one project module imports from another."""
    bad = []
    for pkg in set(ALLOWED):
        for path in (root / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(NAMESPACE):
                    bad += [f"{module_name(path, root)} imports {node.module}.{a.name}"
                            for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    return sorted(bad)


def test_no_module_imports_another_modules_private_names():
    assert private_imports(REPO) == []


def test_the_check_catches_a_private_import(tmp_path):
    root = _tree(tmp_path, {"trainer/follow.py": "from longseq.trainer.train import _open_run, train\n"})
    assert private_imports(root) == ["trainer.follow imports longseq.trainer.train._open_run"]


def test_project_modules_are_imported_through_the_namespace():
    assert bare_imports(REPO) == []


def test_there_are_no_import_cycles():
    assert cycles(import_graph(REPO)) == []


def test_the_trainer_reads_published_data_through_the_reader_only():
    graph = import_graph(REPO)
    assert "dataset.published" in graph["reader.readers"]
    assert not any(t.startswith(("etl", "sources")) for m, ts in graph.items() if m.startswith(("trainer", "reader")) for t in ts)
    assert not any(t.startswith("trainer") for m, ts in graph.items() if m.startswith("reader") for t in ts)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize("files, expected", [
    ({"trainer/train.py": "def f():\n    from longseq.etl.gates.publish import published_files\n"},
     "trainer.train imports etl.gates.publish"),
    ({"etl/batch/build.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from longseq.trainer.model import X\n"},
     "etl.batch.build imports trainer.model"),
    ({"etl/demo.py": "import longseq.bench.quality\n"}, "etl.demo imports bench.quality"),
    ({"schemas/x.py": "from longseq.dataset import layout\n", "dataset/layout.py": ""}, "schemas.x imports dataset.layout"),
    ({"reader/batch.py": "from longseq.trainer.model import X\n"}, "reader.batch imports trainer.model"),
    ({"etl/batch/build.py": "from longseq.etl.stream.state import X\n"}, "etl.batch.build imports etl.stream.state"),
    ({"etl/gates/publish.py": "from longseq.etl.batch.build import X\n"}, "etl.gates.publish imports etl.batch.build"),
])
def test_the_check_catches_a_forbidden_import(tmp_path, files, expected):
    assert expected in forbidden_imports(import_graph(_tree(tmp_path, files)))


def test_the_check_catches_a_cycle(tmp_path):
    root = _tree(tmp_path, {"reader/readers.py": "def f():\n    from longseq.reader import petastorm_reader\n",
                            "reader/petastorm_reader.py": "from longseq.reader.readers import ReaderConfig\n",
                            "trainer/model.py": "from longseq.reader.readers import x\n"})
    assert cycles(import_graph(root)) == [["reader.petastorm_reader", "reader.readers"]]


def test_the_check_catches_a_bare_import(tmp_path):
    root = _tree(tmp_path, {"trainer/train.py": "from trainer.model import RankingModel\n", "trainer/model.py": ""})
    assert bare_imports(root) == ["trainer.train imports trainer.model"]
