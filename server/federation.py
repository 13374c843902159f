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
from simulations.results import save_predictions, versions, write_record


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
        self.classifier = build_classifier(cfg.model, self.labels, lora=lora_spec(cfg), device=self.device)
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
        cfg = self.cfg
        last = next((h for h in reversed(self.history) if h.get("global")), None)
        per_site = self._per_site()
        worst = max(per_site, key=lambda s: s["epsilon_spent"] if s["epsilon_spent"] is not None else -1, default=None)
        adapter = self.initial_arrays()
        sent_up = [s.get("bytes", 0) for h in self.history for s in h.get("sites", []) if s.get("status") == "trained"]
        client_sigma = client_noise_multiplier(cfg) if cfg.dp_level == "client" else None
        privacy = {
            "level": "example (per site)" if cfg.dp_level == "sample" else "client (per site, at the server)",
            "epsilon_target": "inf" if not cfg.private else cfg.epsilon,
            "epsilon_spent": (worst["epsilon_spent"] if worst and worst["epsilon_spent"] is not None else "inf") if cfg.dp_level == "sample" else
            (epsilon_spent([(client_sigma, 1.0, self.done_rounds_trained())], delta=cfg.delta, accountant=cfg.accountant) if client_sigma else "inf"),
            "delta": cfg.delta,
            "noise_multiplier": worst["noise_multiplier"] if worst and cfg.dp_level == "sample" else (client_sigma or 0.0),
            "sample_rate": worst["sample_rate"] if worst and cfg.dp_level == "sample" else 1.0,
            "steps": worst["steps"] if worst and cfg.dp_level == "sample" else self.done_rounds_trained(),
            "accountant": cfg.accountant if cfg.private else None,
            "max_grad_norm": cfg.max_grad_norm if cfg.dp_level == "sample" and cfg.private else cfg.client_clip,
        }
        if cfg.dp_level == "client":
            privacy["client_dp"] = {"noise_multiplier": client_sigma, "clipping_norm": cfg.client_clip,
                                    "noise_stddev": (client_sigma or 0.0) * cfg.client_clip / max(sites_connected, 1),
                                    "mechanism": "Flower DifferentialPrivacyServerSideFixedClipping"}
        if self.last_probs is not None:
            save_predictions(self.out, self.eval_data.reports.labels[self.eval_data.test], self.last_probs)
        final_folder = self.out / "adapter"
        save_classifier(self.classifier, final_folder, model_name=cfg.model, max_length=cfg.max_length)
        seconds = time.perf_counter() - self.started
        examples = sum(s.get("num-examples", 0) for h in self.history for s in h.get("sites", []) if s.get("status") == "trained") * cfg.local_epochs
        record = {
            "mode": "federated" if cfg.dp_level == "sample" else "federated-client-dp",
            "config": cfg.to_dict(),
            "privacy": privacy,
            "metrics": last["global"] if last else _client_metrics(self.history),
            "evaluation": "server-held test split" if last else "federated: weighted mean of the sites' own test splits",
            "data": {**(self.eval_data.sizes() if self.eval_data else {}),
                     "n_train": int(sum(s["n_train"] for s in per_site))},
            "timing": {"train_seconds": seconds, "examples_per_second": examples / max(seconds, 1e-9), "total_seconds": seconds},
            "federation": {
                "sites": sites_connected, "rounds": cfg.rounds, "rounds_done": self.done_rounds_trained(),
                "partition": cfg.partition, "aggregation": cfg.aggregation, "dp_level": cfg.dp_level, "per_site": per_site,
                "bytes_up_per_round": int(np.mean(sent_up)) if sent_up else state_bytes(adapter),
                "bytes_down_per_round": state_bytes(adapter), "full_model_bytes": full_model_bytes(self.classifier.model),
                "failed_replies": sum(1 for h in self.history for s in h.get("sites", []) if s.get("status") == "failed"),
            },
            "history": [{"round": h["round"], "test_reports": (h.get("global") or {}).get("n_examples"),
                         "weighted_f1": (h.get("global") or {}).get("weighted_f1"),
                         "micro_f1": (h.get("global") or {}).get("micro_f1"), "macro_f1": (h.get("global") or {}).get("macro_f1"),
                         "aggregated": h.get("aggregated"), "note": h.get("note"),
                         "trained_at_seconds": h.get("trained_at_seconds"), "evaluated_at_seconds": h.get("evaluated_at_seconds"),
                         "sites": [{k: v for k, v in s.items()} for s in h.get("sites", [])],
                         "site_evaluation": h.get("site_evaluation")} for h in self.history],
            "runtime": {"device": str(self.device), "versions": versions(), "model_source": self.classifier.source},
        }
        if self.eval_data is None:
            record["data"].update({"n_val": 0, "n_test": int(sum(r.get("num-examples", 0) for r in (self.history[-1].get("site_evaluation") or []))) if self.history else 0})
        write_record(self.out, record)
        return record

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


def _client_metrics(history: list[dict]) -> dict:
    rows = next((h.get("site_evaluation") for h in reversed(history) if h.get("site_evaluation")), []) or []
    total = sum(r["num-examples"] for r in rows) or 1
    mean = lambda key: sum(r[key] * r["num-examples"] for r in rows) / total  # noqa: E731
    return {"weighted_f1": mean("weighted-f1"), "micro_f1": mean("micro-f1"), "macro_f1": mean("macro-f1"),
            "samples_f1": math.nan, "per_label": {}} if rows else {"weighted_f1": math.nan, "micro_f1": math.nan, "macro_f1": math.nan,
                                                                    "samples_f1": math.nan, "per_label": {}}
