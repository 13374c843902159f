"""What a run leaves on disk: metrics.json (atomically), test predictions, library versions."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("torch", "transformers", "peft", "opacus", "flwr", "numpy", "scikit-learn"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def write_json_atomic(path, data, *, indent: int | None = 1) -> Path:
    """Write JSON to a temporary file and rename it: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=indent, default=_plain))
    tmp.replace(path)
    return path


def write_record(folder, record: dict) -> Path:
    """Write `metrics.json` atomically."""
    return write_json_atomic(Path(folder) / "metrics.json", record, indent=2)


def save_predictions(folder, targets, probs, thresholds=0.5) -> Path:
    """Test-set targets, probabilities and the decision thresholds, for paired tests between runs on the same reports."""
    import numpy as np

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "predictions.npz"
    cut = np.broadcast_to(np.asarray(thresholds, np.float32), (np.asarray(probs).shape[1],))
    np.savez_compressed(
        path, targets=np.asarray(targets, np.float32), probs=np.asarray(probs, np.float16), thresholds=cut
    )
    return path


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
