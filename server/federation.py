"""The server's side of a federated run: global adapter, central evaluation, checkpoints, record.

A checkpoint is written after every round (the global adapter in PEFT format plus the run's
history), so a run started again with the same configuration and output folder resumes from its
last round. Each site keeps its own privacy ledger (see clients/site.py): a resume never resets ε.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np

from common.adapters import full_model_bytes, get_adapter_state, set_adapter_state, state_bytes
from common.config import RunConfig
from common.data import load_reports, prepare
from common.errors import InputError
from common.labels import CT_RATE, MIMIC_CXR
from common.metrics import compute_metrics
from common.model import build_classifier, load_classifier, load_tokenizer, lora_spec, resolve_device, save_classifier
from common.privacy import calibrate_noise, epsilon_spent
from common.runtime import autocast_dtype
from common.training import predict_probs
from common.outputs import save_predictions, versions, write_record


MONITOR_REPORTS = 512  # test reports that monitor the rounds before the last


def label_names_for(cfg: RunConfig) -> tuple[str, ...]:
    if cfg.dataset in ("synthetic-mimic", "mimic-cxr"):
        return MIMIC_CXR.labels
    if cfg.dataset in ("synthetic-ctrate", "ct-rate"):
        return CT_RATE.labels
    columns = tuple(c.strip() for c in cfg.label_columns.split(",") if c.strip())
    if not columns:
        raise InputError("a federated csv run needs data.label-columns so that the server can build the head")
    return columns


def client_noise_multiplier(cfg: RunConfig) -> float:
    """Client-level DP: the given noise, or σ calibrated so that every site's whole contribution
    over all rounds (q = 1, no sampling amplification) is (ε, δ)-DP at the configured ε."""
    if cfg.client_noise >= 0 or not cfg.private:
        return max(cfg.client_noise, 0.0)
    return calibrate_noise(target_epsilon=cfg.epsilon, delta=cfg.delta, sample_rate=1.0, steps=cfg.rounds, accountant=cfg.accountant)


class FederationRun:
    def __init__(self, cfg: RunConfig):
        self.cfg, self.out = cfg, Path(cfg.out)
        self.started = time.perf_counter()
        self.device = resolve_device(cfg.device)
        self.labels = label_names_for(cfg)
        self.classifier = build_classifier(cfg.model, self.labels, lora=lora_spec(cfg, federated=True), device=self.device)
        self.eval_data = self._central_eval_data()
        self.checkpoints = self.out / "checkpoints"
        self.history: list[dict] = []
        self.last_probs = None  # test-set probabilities of the latest global adapter
        self.done_rounds = 0
        self._resume()

    def start_clock(self) -> None:
        """Training time starts when the sites are connected, not while the server waits for them."""
        self.started = time.perf_counter()

    # ---- data the server may hold (simulation: the global test split)

    def _central_eval_data(self):
        try:
            data = prepare(self.cfg, load_tokenizer(self.cfg.model), load_reports(self.cfg))
        except InputError:
            return None  # deployment: the reports stay at the hospitals; evaluation is federated
        if data.label_names != self.labels:
            raise InputError(f"the server's data has labels {data.label_names}, not {self.labels}")
        return data

    # ---- checkpoints and resume

    def _resume(self) -> None:
        state_file = self.checkpoints / "state.json"
        if not state_file.is_file():
            return
        state = json.loads(state_file.read_text())
        if state["config"] != self.cfg.to_flower():
            raise InputError(f"{self.out} holds a checkpoint of a run with another configuration; use another --out")
        self.done_rounds = int(state["round"])
        self.history = state["history"]
        restored, _ = load_classifier(self.checkpoints / f"round-{self.done_rounds:03d}")
        saved = get_adapter_state(restored.model, trainable_only=False)
        set_adapter_state(self.classifier.model, {k: v for k, v in saved.items() if k in self.initial_arrays()})

    def initial_arrays(self) -> dict[str, np.ndarray]:
        return get_adapter_state(self.classifier.model)

    @property
    def remaining_rounds(self) -> int:
        return max(self.cfg.rounds - self.done_rounds, 0)

    def _checkpoint(self, global_round: int) -> None:
        folder = self.checkpoints / f"round-{global_round:03d}"
        save_classifier(self.classifier, folder, model_name=self.cfg.model, max_length=self.cfg.max_length)
        state = {"round": global_round, "config": self.cfg.to_flower(), "history": self.history}
        tmp = self.checkpoints / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.checkpoints / "state.json")
        for old in self.checkpoints.glob("round-*"):  # keep the last two rounds
            if old.is_dir() and int(old.name.split("-")[1]) < global_round - 1:
                shutil.rmtree(old, ignore_errors=True)

    # ---- per round

    def evaluate(self, global_round: int, arrays: dict[str, np.ndarray]) -> dict | None:
        if global_round == 0:
            return None  # the initial adapter predicts the prior for every label: nothing to learn from it
        set_adapter_state(self.classifier.model, arrays)
        metrics, final = None, global_round >= self.cfg.rounds
        if self.eval_data is not None:
            # Rounds before the last are monitored on a fixed subset of the test split: evaluating
            # every test report every round would cost as much as a fifth of the training.
            test = self.eval_data.test if final else self.eval_data.test[:MONITOR_REPORTS]
            probs = predict_probs(self.classifier.model, self.eval_data.dataset(test), pad_id=self.classifier.pad_id,
                                  device=self.device, autocast_dtype=autocast_dtype(self.device))
            metrics = compute_metrics(self.eval_data.reports.labels[test], probs, self.labels)
            if final:
                self.last_probs = probs
        entry = self._entry(global_round)
        entry["global"] = metrics
        entry["evaluated_at_seconds"] = time.perf_counter() - self.started
        self._checkpoint(global_round)
        progress = self.out / "progress.json.tmp"
        progress.write_text(json.dumps({"round": global_round, "rounds": self.cfg.rounds, "history": self.history}))
        progress.replace(self.out / "progress.json")  # a reader never sees half a file
        return metrics

    def record_train(self, global_round: int, rows: list[dict], aggregated: bool) -> None:
        entry = self._entry(global_round)
        entry.update({"sites": rows, "aggregated": aggregated, "trained_at_seconds": time.perf_counter() - self.started,
                      "note": None if aggregated else f"too few usable replies (< {self.cfg.min_sites}): global adapter unchanged"})

    def record_evaluate(self, global_round: int, rows: list[dict]) -> None:
        self._entry(global_round)["site_evaluation"] = rows

    def _entry(self, global_round: int) -> dict:
        for entry in self.history:
            if entry["round"] == global_round:
                return entry
        self.history.append({"round": global_round})
        return self.history[-1]

    # ---- the record

    def finish(self, sites_connected: int) -> dict:
        """Save the final adapter and predictions; write metrics.json in `radfl train`'s schema plus federation."""
        cfg = self.cfg
        last = next((h for h in reversed(self.history) if h.get("global")), None)
        per_site = self._per_site()
        adapter = self.initial_arrays()
        trained = [s for h in self.history for s in h.get("sites", []) if s.get("status") == "trained"]
        sent_up = [s["bytes"] for s in trained]
        if self.last_probs is not None:
            save_predictions(self.out, self.eval_data.reports.labels[self.eval_data.test], self.last_probs)
        save_classifier(self.classifier, self.out / "adapter", model_name=cfg.model, max_length=cfg.max_length)
        seconds = time.perf_counter() - self.started
        data = self.eval_data.sizes() if self.eval_data else {"n_val": 0, "n_test": _site_test_reports(self.history)}
        record = {
            "mode": "federated" if cfg.dp_level == "sample" else "federated-client-dp",
            "config": cfg.to_dict(),
            "privacy": self._privacy(per_site, sites_connected),
            "metrics": last["global"] if last else _client_metrics(self.history),
            "evaluation": "server-held test split" if last else "federated: weighted mean of the sites' own test splits",
            "data": {**data, "n_train": int(sum(s["n_train"] for s in per_site))},
            "timing": {"train_seconds": seconds, "total_seconds": seconds,
                       "examples_per_second": sum(s.get("examples-seen", 0) for s in trained) / max(seconds, 1e-9)},
            "federation": {
                "sites": sites_connected, "rounds": cfg.rounds, "rounds_done": self.done_rounds_trained(),
                "partition": cfg.partition, "aggregation": cfg.aggregation, "dp_level": cfg.dp_level, "per_site": per_site,
                "bytes_up_per_round": int(np.mean(sent_up)) if sent_up else state_bytes(adapter),
                "bytes_down_per_round": state_bytes(adapter), "full_model_bytes": full_model_bytes(self.classifier.model),
                "failed_replies": sum(1 for h in self.history for s in h.get("sites", []) if s.get("status") == "failed"),
            },
            "history": [_history_entry(h) for h in self.history],
            "runtime": {"optimizer": cfg.train_optimizer, "lr": cfg.train_lr, "device": str(self.device), "versions": versions(), "model_source": self.classifier.source},
        }
        write_record(self.out, record)
        return record

    def _privacy(self, per_site: list[dict], sites_connected: int) -> dict:
        """The numbers the privacy claim rests on. Example level: the site that spent the most ε.
        Client level: the server's Gaussian mechanism over all rounds (q = 1, no amplification)."""
        cfg = self.cfg
        common = {"epsilon_target": cfg.epsilon if cfg.private else "inf", "delta": cfg.delta,
                  "accountant": cfg.accountant if cfg.private else None}
        if cfg.dp_level == "sample":
            worst = max(per_site, key=lambda s: -1 if s["epsilon_spent"] is None else s["epsilon_spent"], default=None)
            spent = worst["epsilon_spent"] if worst and worst["epsilon_spent"] is not None else "inf"
            return {"level": "example (each site's reports)", **common, "epsilon_spent": spent,
                    "noise_multiplier": worst["noise_multiplier"] if worst else 0.0, "sample_rate": worst["sample_rate"] if worst else None,
                    "steps": worst["steps"] if worst else 0, "max_grad_norm": cfg.max_grad_norm if cfg.private else None}
        sigma, rounds = client_noise_multiplier(cfg), self.done_rounds_trained()
        spent = epsilon_spent([(sigma, 1.0, rounds)], delta=cfg.delta, accountant=cfg.accountant) if sigma > 0 else "inf"
        return {"level": "client (each site's whole contribution)", **common, "epsilon_spent": spent, "noise_multiplier": sigma,
                "sample_rate": 1.0, "steps": rounds, "max_grad_norm": cfg.client_clip,
                "client_dp": {"noise_multiplier": sigma, "clipping_norm": cfg.client_clip,
                              "noise_stddev": sigma * cfg.client_clip / max(sites_connected, 1),
                              "mechanism": "Flower DifferentialPrivacyServerSideFixedClipping"}}

    def done_rounds_trained(self) -> int:
        return sum(1 for h in self.history if h.get("aggregated"))

    def _per_site(self) -> list[dict]:
        sites: dict[int, dict] = {}
        for h in self.history:
            for row in h.get("sites", []):
                if "site-index" not in row:
                    continue
                index = int(row["site-index"])
                site = sites.setdefault(index, {"site": index, "n_train": 0, "epsilon_spent": None, "noise_multiplier": None,
                                                "sample_rate": None, "steps": 0, "declined_rounds": 0, "trained_rounds": 0})
                site["noise_multiplier"], site["sample_rate"] = row["noise-multiplier"], row["sample-rate"]
                site["steps"] = int(row["steps"])
                site["epsilon_spent"] = None if row["epsilon-spent"] < 0 else row["epsilon-spent"]
                if row["status"] == "declined":
                    site["declined_rounds"] += 1
                else:
                    site["trained_rounds"] += 1
                    site["n_train"] = int(row["num-examples"])
        return [sites[k] for k in sorted(sites)]


def _history_entry(h: dict) -> dict:
    metrics = h.get("global") or {}
    return {"round": h["round"], "test_reports": metrics.get("n_examples"), "weighted_f1": metrics.get("weighted_f1"),
            "micro_f1": metrics.get("micro_f1"), "macro_f1": metrics.get("macro_f1"), "aggregated": h.get("aggregated"),
            "note": h.get("note"), "trained_at_seconds": h.get("trained_at_seconds"),
            "evaluated_at_seconds": h.get("evaluated_at_seconds"), "sites": h.get("sites", []),
            "site_evaluation": h.get("site_evaluation")}


def _site_test_reports(history: list[dict]) -> int:
    rows = next((h.get("site_evaluation") for h in reversed(history) if h.get("site_evaluation")), []) or []
    return int(sum(r.get("num-examples", 0) for r in rows))


def _client_metrics(history: list[dict]) -> dict:
    rows = next((h.get("site_evaluation") for h in reversed(history) if h.get("site_evaluation")), []) or []
    total = sum(r["num-examples"] for r in rows) or 1
    mean = lambda key: sum(r[key] * r["num-examples"] for r in rows) / total  # noqa: E731
    return {"weighted_f1": mean("weighted-f1"), "micro_f1": mean("micro-f1"), "macro_f1": mean("macro-f1"),
            "samples_f1": math.nan, "per_label": {}} if rows else {"weighted_f1": math.nan, "micro_f1": math.nan, "macro_f1": math.nan,
                                                                    "samples_f1": math.nan, "per_label": {}}
