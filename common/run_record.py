"""metrics.json: the one record of a run, built from typed parts by every mode (docs/metrics-schema.md).

Non-private budgets are `math.inf` in memory and the string "inf" on disk (`common.config.to_json`).
`validate` checks a written record against this schema; the tests run it on every mode's output.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from common.config import to_json
from common.outputs import write_record

MODES = ("centralized", "federated", "federated-client-dp", "federated-distributed")
PRIVACY_KEYS = (
    "level",
    "unit",
    "epsilon_target",
    "epsilon_spent",
    "delta",
    "noise_multiplier",
    "sample_rate",
    "steps",
    "accountant",
    "max_grad_norm",
    "history",
)
RUNTIME_KEYS = (
    "optimizer",
    "lr",
    "head_lr",
    "device",
    "threads",
    "grad_sample_mode",
    "train_autocast",
    "model_source",
    "versions",
)


@dataclass
class RunRecord:
    mode: str  # one of MODES
    config: dict  # every option of the run (RunConfig.to_dict)
    privacy: dict  # PRIVACY_KEYS: the numbers the claim rests on
    recipe: dict  # what the recipe chose and why (common/recipe.py)
    metrics: dict | None  # test split, at `thresholds`
    val_metrics: dict | None  # validation split (centralized; federated with a server-held split)
    thresholds: dict  # {"rule": how they were chosen, "values": {label: threshold}}
    warm_start: dict | None  # the public start (settings, sha256, no private data) and its zero-ε test metrics
    baselines: dict | None  # TF-IDF + logistic regression and its DP twin, same splits
    data: dict  # n_train, n_val, n_test, ...
    timing: dict  # train_seconds, total_seconds, ...
    runtime: dict  # RUNTIME_KEYS
    evaluation: str  # where `metrics` come from
    federation: dict | None = None  # federated modes: sites, rounds, per-site ledgers, bytes, secure aggregation
    history: list | None = None  # federated modes: one entry per round

    def to_dict(self) -> dict:
        return _json_ready(asdict(self))

    def write(self, folder) -> Path:
        record = self.to_dict()
        validate(record)
        return write_record(folder, record)


def _json_ready(value):
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return to_json(value)


def validate(record: dict) -> None:
    """Raise ValueError when `record` does not follow the schema above."""
    names = {f.name for f in fields(RunRecord)}
    missing = sorted(names - set(record))
    if missing:
        raise ValueError(f"metrics.json lacks {', '.join(missing)}")
    if record["mode"] not in MODES:
        raise ValueError(f"unknown mode {record['mode']!r}")
    for key in PRIVACY_KEYS:
        if key not in record["privacy"]:
            raise ValueError(f"metrics.json privacy lacks {key}")
    for key in RUNTIME_KEYS:
        if key not in record["runtime"]:
            raise ValueError(f"metrics.json runtime lacks {key}")
    if record["mode"] != "centralized" and (record["federation"] is None or record["history"] is None):
        raise ValueError("a federated record needs federation and history")
    for key in ("n_train", "n_test"):
        if key not in record["data"]:
            raise ValueError(f"metrics.json data lacks {key}")
    if record["metrics"] is not None and "weighted_f1" not in record["metrics"]:
        raise ValueError("metrics.json metrics lack weighted_f1")
