"""The installed distribution: every folder at the repository root installs under the one
`longseq` namespace, so that installing longseq beside other packages named `features`,
`schemas`, `etl`, ... breaks neither."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_installed_under_the_namespace():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"longseq": "."}
    folders = {"longseq." + ".".join(p.parent.relative_to(REPO).parts)
               for p in REPO.glob("*/**/__init__.py")
               if not {"tests", ".venv", "build"} & set(p.relative_to(REPO).parts) and "-" not in p.parent.name}
    assert folders == set(setuptools["packages"])


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_wheel_installs_beside_other_features_and_schemas_modules(tmp_path):
    wheel_dir, site, source = tmp_path / "wheel", tmp_path / "site", tmp_path / "source"
    # from a copy of the tracked files: a build leaves build/ beside the sources it read
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.decode()
    for name in filter(None, tracked.split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "-w", str(wheel_dir), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    # another distribution's top-level `features` and `schemas`, already installed
    for name in ("features", "schemas"):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text(f"OWNER = 'other {name}'\n")
    wheel = next(wheel_dir.glob("longseq-*.whl"))
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                                str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info")) == ["bin", "features", "longseq", "schemas"]

    # -S: no site-packages .pth files, so the editable checkout's finder cannot answer for longseq
    code = f"""
import sys
sys.path[:0] = [{str(site)!r}]
import site; site.addsitedir({sys.prefix + '/lib/python3.11/site-packages'!r})
sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]
import features, schemas
from longseq.schemas.spec import load_spec, DEFAULT_SPEC_FILE
from longseq.features.hashing import name_salt
import longseq.cli.main
spec = load_spec(DEFAULT_SPEC_FILE)
print(features.OWNER, schemas.OWNER, longseq.cli.main.__file__.startswith({str(site)!r}), spec.tasks[0] == "finish")
"""
    ran = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.split() == ["other", "features", "other", "schemas", "True", "True"]
