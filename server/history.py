"""The one record of a federated run's rounds: what each site replied, what was aggregated, what was measured.

Each round has one entry (`round`, `sites`, `aggregated`, `note`, `global`, `site_evaluation`, timings);
the strategy, the evaluator and the checkpoint store all write here, and metrics.json, progress.json
and the checkpoint state are read from here. A site's row holds only what the site sent: a status,
a reason code, the ledger's numbers and the public FedAvg weight.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from common import records as R
from common.config import to_json
from common.outputs import write_json_atomic

ROW_KEYS = {
    R.EPSILON_SPENT: "epsilon_spent",
    R.LIFETIME_EPSILON: "lifetime_epsilon",
    R.NOISE_MULTIPLIER: "noise_multiplier",
    R.SAMPLE_RATE: "sample_rate",
    R.STEPS: "steps",
    R.WEIGHT: "weight",
}


def site_row(reply, *, train: bool = True) -> dict:
    """A site's reply as a history row. An error reply keeps only Flower's error code: no text is stored.

    A train reply without arrays counts as declined; an evaluate reply never carries arrays.
    """
    if reply.has_error():
        return {"site": None, "status": "failed", "reason": "site-error", "error_code": int(reply.error.code)}
    metrics = dict(reply.content[R.METRICS]) if R.METRICS in reply.content.metric_records else {}
    declined = metrics.get(R.DECLINED, 0.0) >= 1.0 or (train and R.ARRAYS not in reply.content.array_records)
    row = {
        "site": int(metrics.get(R.SITE_INDEX, -1)),
        "status": "declined" if declined else "trained",
        "reason": R.reason_name(metrics.get(R.REASON, int(R.Reason.SITE_ERROR if declined else R.Reason.OK))),
    }
    for key, name in ROW_KEYS.items():
        if key in metrics:
            row[name] = to_json(float(metrics[key]))
    if train and not declined:
        row["bytes"] = sum(len(a.data) for a in reply.content[R.ARRAYS].values())
    return row


class RoundHistory:
    def __init__(self, out: Path, rounds: int, entries: list[dict] | None = None):
        self.out, self.rounds = Path(out), rounds
        self.entries: list[dict] = entries or []
        self.started = time.perf_counter()
        self.stages: dict[str, dict] = {}  # wall seconds per stage of a round (exchanges, evaluation, checkpoint)

    def start_clock(self) -> None:
        self.started = time.perf_counter()

    def add_stage(self, name: str, seconds: float) -> None:
        stage = self.stages.setdefault(name, {"calls": 0, "seconds": 0.0})
        stage["calls"] += 1
        stage["seconds"] += seconds

    def entry(self, global_round: int) -> dict:
        for entry in self.entries:
            if entry["round"] == global_round:
                return entry
        self.entries.append({"round": global_round})
        return self.entries[-1]

    def record_train(self, global_round: int, rows: list[dict], aggregated: bool, note: str | None = None) -> None:
        self.entry(global_round).update(
            {
                "sites": rows,
                "aggregated": aggregated,
                "note": note,
                "trained_at_seconds": time.perf_counter() - self.started,
            }
        )

    def record_evaluation(self, global_round: int, metrics: dict | None) -> None:
        entry = self.entry(global_round)
        entry["global"] = metrics
        entry["evaluated_at_seconds"] = time.perf_counter() - self.started
        write_json_atomic(
            self.out / "progress.json", {"round": global_round, "rounds": self.rounds, "history": self.entries}
        )

    def record_site_evaluation(self, global_round: int, rows: list[dict]) -> None:
        self.entry(global_round)["site_evaluation"] = rows

    def rounds_aggregated(self) -> int:
        return sum(1 for h in self.entries if h.get("aggregated"))

    def last_global(self) -> dict | None:
        return next((h["global"] for h in reversed(self.entries) if h.get("global")), None)

    def site_rows(self):
        return [row for h in self.entries for row in h.get("sites", [])]

    def per_site(self) -> list[dict]:
        """Each site's last ledger numbers and how many rounds it trained or declined (with the reasons)."""
        sites: dict[int, dict] = {}
        for row in self.site_rows():
            if row.get("site") is None:
                continue
            site = sites.setdefault(
                row["site"], {"site": row["site"], "trained_rounds": 0, "declined_rounds": 0, "reasons": {}}
            )
            for name in ROW_KEYS.values():
                if name in row:
                    site[name] = row[name]
            if row["status"] == "trained":
                site["trained_rounds"] += 1
            else:
                site["declined_rounds"] += 1
                site["reasons"][row["reason"]] = site["reasons"].get(row["reason"], 0) + 1
        return [sites[k] for k in sorted(sites)]

    def site_evaluation_metrics(self) -> dict | None:
        """The sites' own test metrics of the final adapter (weighted by their test reports), where their policies allow it."""
        rows = next((h.get("site_evaluation") for h in reversed(self.entries) if h.get("site_evaluation")), None) or []
        rows = [r for r in rows if r.get("status") == "evaluated"]
        if not rows:
            return None
        total = sum(r["test_reports"] for r in rows) or 1
        mean = lambda key: sum(r[key] * r["test_reports"] for r in rows) / total  # noqa: E731
        return {
            "weighted_f1": mean("weighted_f1"),
            "micro_f1": mean("micro_f1"),
            "macro_f1": mean("macro_f1"),
            "samples_f1": math.nan,
            "per_label": {},
            "n_examples": total,
            "sites": len(rows),
        }

    def summary(self) -> list[dict]:
        """One row per round for metrics.json: the global headline metrics, what each site replied, timings."""
        rows = []
        for h in self.entries:
            metrics = h.get("global") or {}
            rows.append(
                {
                    "round": h["round"],
                    "test_reports": metrics.get("n_examples"),
                    "weighted_f1": metrics.get("weighted_f1"),
                    "micro_f1": metrics.get("micro_f1"),
                    "macro_f1": metrics.get("macro_f1"),
                    "aggregated": h.get("aggregated"),
                    "note": h.get("note"),
                    "trained_at_seconds": h.get("trained_at_seconds"),
                    "evaluated_at_seconds": h.get("evaluated_at_seconds"),
                    "sites": h.get("sites", []),
                    "site_evaluation": h.get("site_evaluation"),
                    "secure_aggregation": h.get("secure_aggregation"),
                }
            )
        return rows

    def to_json(self) -> str:
        return json.dumps(self.entries)
