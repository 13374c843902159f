"""The app that `flwr run` packages: a staged copy of the repository builds the same FAB, without walking the venv."""

from pathlib import Path

from flwr.cli.build import build_fab_from_disk

from simulations.flower import app_dir, staged_app


def _listing(fab: bytes) -> dict[str, bytes]:
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(fab)) as z:
        return {name: z.read(name) for name in z.namelist()}


def test_the_staged_app_builds_the_same_fab_as_the_repository():
    root = app_dir()
    with staged_app(root) as staged:
        assert (staged / "pyproject.toml").is_file()
        assert not (staged / ".venv").exists() and not (staged / ".git").exists()
        from_copy = build_fab_from_disk(staged)
    from_root = build_fab_from_disk(root)
    assert _listing(from_copy) == _listing(from_root)
    assert not staged.exists()  # removed once the run is submitted


def test_the_staged_copy_leaves_out_what_gitignore_names(tmp_path):
    (tmp_path / ".gitignore").write_text("runs/\n*.log\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    for rel in ("pkg/a.py", "runs/big/adapter.json", "pkg/out.log", ".git/config", "docs/x.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    with staged_app(tmp_path) as staged:
        kept = sorted(p.relative_to(staged).as_posix() for p in Path(staged).rglob("*") if p.is_file())
    assert kept == [".gitignore", "docs/x.md", "pkg/a.py", "pyproject.toml"]
