"""Where radfl keeps what it can recompute: `$RADFL_CACHE`, default `~/.cache/radfl`, one folder per kind."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(kind: str) -> Path:
    return Path(os.environ.get("RADFL_CACHE", Path.home() / ".cache" / "radfl")) / kind


def store(path: Path, write) -> None:
    """`write(tmp)` then rename onto `path`: a reader never sees half a file, and a read-only cache costs time only."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp{path.suffix}")
        write(tmp)
        os.replace(tmp, path)
    except OSError:
        pass
