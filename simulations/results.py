"""The metrics.json record every run writes, and the summary table the CLI prints."""

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


def write_record(folder, record: dict) -> Path:
    """Write `metrics.json` atomically: a reader never sees half a record."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "metrics.json"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=_plain))
    tmp.replace(path)
    return path


def save_predictions(folder, targets, probs) -> Path:
    """Test-set targets and probabilities, for paired tests between runs on the same reports."""
    import numpy as np

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "predictions.npz"
    np.savez_compressed(path, targets=np.asarray(targets, np.float32), probs=np.asarray(probs, np.float16))
    return path


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def summary_table(record: dict) -> str:
    """A short plain-text table: headline metrics, privacy, per-label F1."""
    m, p, t = record["metrics"], record["privacy"], record["timing"]
    eps = p["epsilon_target"]
    lines = [
        f"{'mode':<22}{record['mode']}",
        f"{'model':<22}{record['config']['model']}",
        f"{'data':<22}{record['config']['dataset']}: {record['data']['n_train']} train / {record['data']['n_val']} val / {record['data']['n_test']} test",
        f"{'epsilon target/spent':<22}{eps} / {_num(p['epsilon_spent'])}  (delta {p['delta']:g}, sigma {p['noise_multiplier']:.3f}, "
        f"q {p['sample_rate']:.4f}, {p['steps']} steps, {p['accountant'] or 'no DP'})",
        f"{'train time':<22}{t['train_seconds']:.1f} s ({t['examples_per_second']:.1f} examples/s)",
        "",
        f"{'weighted F1':<22}{m['weighted_f1']:.4f}",
        f"{'micro F1':<22}{m['micro_f1']:.4f}",
        f"{'macro F1':<22}{m['macro_f1']:.4f}",
        f"{'samples F1':<22}{m['samples_f1']:.4f}",
        "",
        f"{'label':<30}{'P':>7}{'R':>7}{'F1':>7}{'support':>9}",
    ]
    for name, row in m["per_label"].items():
        lines.append(f"{name:<30}{row['precision']:>7.3f}{row['recall']:>7.3f}{row['f1']:>7.3f}{row['support']:>9d}")
    return "\n".join(lines)


def _num(value) -> str:
    return value if isinstance(value, str) else f"{value:.4f}"
