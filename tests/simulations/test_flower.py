"""The app that `flwr run` packages: a staged copy of the app folder builds Flower's FAB without walking the venv."""

import io
import zipfile
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk

from simulations.flower import app_dir, staged_app

PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "probe"
version = "1.0.0"
dependencies = ["flwr"]

[tool.flwr.app]
publisher = "radfl"

[tool.flwr.app.components]
serverapp = "pkg.server:app"
clientapp = "pkg.client:app"
"""


def _listing(fab: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(fab)) as z:
        return {name: z.read(name) for name in z.namelist()}


def _same_fab_both_ways(root: Path) -> list[str]:
    with staged_app(root) as staged:
        from_copy = _listing(build_fab_from_disk(staged))
        copied = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    assert from_copy == _listing(build_fab_from_disk(root))
    assert not staged.exists()  # removed once the run is submitted
    return copied


def test_the_staged_repository_builds_the_same_fab():
    copied = _same_fab_both_ways(app_dir())
    assert "pyproject.toml" in copied and not any(p.startswith((".venv/", ".git/")) for p in copied)


@pytest.mark.parametrize(
    "gitignore",
    [
        "runs/\n*.log\n",
        "runs/\n!runs/keep.py\n",  # a re-include under an ignored folder: nothing may be pruned
        "*.py\n!pkg/*.py\n",  # a suffix pattern does not drop a folder's other files
        "",
    ],
)
def test_a_staged_app_builds_the_fab_flower_builds(tmp_path, gitignore):
    (tmp_path / ".gitignore").write_text(gitignore)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    for rel in (
        "pkg/__init__.py",
        "pkg/server.py",
        "pkg/client.py",
        "pkg/notes.md",
        "runs/keep.py",
        "runs/big/adapter.json",
        "pkg/out.log",
        "data/reports.csv",
        ".venv/lib/site.py",
        "docs/x.md",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("app = None\n")
    copied = _same_fab_both_ways(tmp_path)
    assert "data/reports.csv" not in copied  # only files a FAB can hold are copied
    assert not any(p.startswith(".venv/") for p in copied)
