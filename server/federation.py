"""The server's side of a federated run: the global adapter, its evaluation, checkpoints and the record.

`FederationRun` wires four parts that each do one thing: the classifier (warm-started from public
data), the evaluator (server-held reports, simulations only), the checkpoint store and the round
history; `finish` writes metrics.json from them through the one record builder.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from common.adapters import full_model_bytes, get_adapter_state, set_adapter_state, state_bytes
from common.config import RunConfig
from common.data import label_names_for
from common.model import build_classifier, lora_spec, resolve_device, save_classifier
from common.outputs import save_predictions, versions
from common.privacy import calibrate_noise, epsilon_spent
from common.run_record import RunRecord
from common.warmstart import apply_warm_start
from server.checkpoints import CheckpointStore
from server.evaluation import ServerEvaluator
from server.history import RoundHistory

MODE = {"sample": "federated", "client": "federated-client-dp", "distributed": "federated-distributed"}


def client_noise_multiplier(cfg: RunConfig) -> float:
    """Client-level DP: the given noise, or σ calibrated so that every site's whole contribution
    over all rounds (q = 1, no sampling amplification) is (ε, δ)-DP at the configured ε."""
    if cfg.client_noise >= 0 or not cfg.private:
        return max(cfg.client_noise, 0.0)
    return calibrate_noise(
        target_epsilon=cfg.epsilon, delta=cfg.delta, sample_rate=1.0, steps=cfg.rounds, accountant=cfg.accountant
    )


class FederationRun:
    def __init__(self, cfg: RunConfig, *, log=print):
        self.cfg, self.out = cfg, Path(cfg.out)
        self.device = resolve_device(cfg.device)
        self.classifier = build_classifier(
            cfg.model, label_names_for(cfg), lora=lora_spec(cfg, federated=True), device=self.device
        )
        self.warm = apply_warm_start(self.classifier, cfg, log=log)
        self.evaluator = ServerEvaluator(cfg, self.classifier, self.device)
        self.checkpoints = CheckpointStore(self.out, cfg.to_flower(), model_name=cfg.model, max_length=cfg.max_length)
        self.done_rounds, entries = self.checkpoints.resume(self.classifier)
        self.history = RoundHistory(self.out, cfg.rounds, entries)
        self.secure_aggregation: dict | None = None  # filled by the distributed-DP path

    @property
    def remaining_rounds(self) -> int:
        return max(self.cfg.rounds - self.done_rounds, 0)

    def arrays(self) -> dict[str, np.ndarray]:
        return get_adapter_state(self.classifier.model)

    def monitored(self, global_round: int) -> bool:
        """Is the global adapter evaluated after this round? Always after the last; before it, at
        fl.monitor-rounds rounds evenly spread (every round of a short federation, a few of dozens)."""
        rounds = self.cfg.rounds
        if global_round >= rounds:
            return True
        wanted = min(self.cfg.monitor_rounds, rounds - 1)
        return global_round in {round(i * rounds / (wanted + 1)) for i in range(1, wanted + 1)}

    def end_round(self, global_round: int, arrays: dict[str, np.ndarray] | None) -> dict | None:
        """After a round: load the new global adapter, evaluate it (where the server holds reports and
        the round is monitored), checkpoint."""
        if arrays is not None:
            set_adapter_state(self.classifier.model, arrays)
        started = time.perf_counter()
        monitored = self.monitored(global_round)
        metrics = self.evaluator.evaluate(final=global_round >= self.cfg.rounds) if monitored else None
        self.history.record_evaluation(global_round, metrics)
        if metrics is not None:
            self.history.add_stage("evaluation", time.perf_counter() - started)
        started = time.perf_counter()
        self.checkpoints.save(global_round, self.classifier, self.history.entries)
        self.history.add_stage("checkpoint", time.perf_counter() - started)
        return metrics

    def finish(self, sites_connected: int) -> dict:
        """Save the final adapter and predictions; write metrics.json."""
        cfg, history = self.cfg, self.history
        per_site = history.per_site()
        trained = [r for r in history.site_rows() if r["status"] == "trained"]
        sent_up = [r["bytes"] for r in trained if "bytes" in r]
        adapter = self.arrays()
        data = self.evaluator.data
        if self.evaluator.last_probs is not None:
            save_predictions(
                self.out, data.reports.labels[data.test], self.evaluator.last_probs, self.evaluator.thresholds
            )
        labels = self.classifier.label_names
        thresholds = self.evaluator.thresholds
        values = {
            n: float(t)
            for n, t in zip(
                labels, [thresholds] * len(labels) if isinstance(thresholds, float) else thresholds, strict=True
            )
        }
        save_classifier(
            self.classifier, self.out / "adapter", model_name=cfg.model, max_length=cfg.max_length, thresholds=values
        )
        server_metrics = history.last_global()
        site_metrics = history.site_evaluation_metrics()
        seconds = time.perf_counter() - history.started
        record = RunRecord(
            mode=MODE[cfg.dp_level],
            config=cfg.to_dict(),
            privacy=self._privacy(per_site, sites_connected),
            recipe={"rule": "each site applies common/recipe.py to its own N and epsilon, spread over the rounds"},
            metrics=server_metrics or site_metrics,
            val_metrics=None,
            thresholds={"rule": self.evaluator.rule, "values": values},
            warm_start=self.warm.record() if self.warm else None,
            baselines=None,
            data={
                **(data.sizes() if data else {}),
                "n_train": data.sizes()["n_train"] if data else None,
                "n_test": len(data.test) if data else (site_metrics or {}).get("n_examples"),
            },
            timing={"train_seconds": seconds, "total_seconds": seconds, "stages": history.stages},
            runtime={
                "optimizer": "per site (recipe)",
                "lr": None,
                "head_lr": None,
                "device": str(self.device),
                "threads": None,
                "grad_sample_mode": "per site (guard)",
                "train_autocast": None,
                "model_source": self.classifier.source,
                "versions": versions(),
            },
            evaluation=(
                "server-held test split (simulation)"
                if server_metrics
                else "the sites' own test splits, where their policies allow plain metrics of the final adapter"
                if site_metrics
                else "none: the server holds no reports and no site's policy allows evaluation"
            ),
            federation={
                "sites": sites_connected,
                "rounds": cfg.rounds,
                "rounds_done": history.rounds_aggregated(),
                "partition": cfg.partition,
                "aggregation": cfg.aggregation,
                "dp_level": cfg.dp_level,
                "per_site": per_site,
                "bytes_up_per_round": int(np.mean(sent_up)) if sent_up else state_bytes(adapter),
                "bytes_down_per_round": state_bytes(adapter),
                "full_model_bytes": full_model_bytes(self.classifier.model),
                "declined_replies": sum(1 for r in history.site_rows() if r["status"] == "declined"),
                "failed_replies": sum(1 for r in history.site_rows() if r["status"] == "failed"),
                "secure_aggregation": self.secure_aggregation,
            },
            history=history.summary(),
        )
        record.write(self.out)
        return record.to_dict()

    def _privacy(self, per_site: list[dict], sites_connected: int) -> dict:
        """The numbers the claim rests on. Example level: the site that spent the most ε (each site's own ledger).
        Client level: the server's Gaussian mechanism over the rounds aggregated (q = 1, no amplification)."""
        cfg = self.cfg
        common = {
            "unit": cfg.privacy_unit,
            "epsilon_target": cfg.epsilon,
            "delta": cfg.delta,
            "accountant": cfg.accountant if cfg.private else None,
            "history": [],
        }
        if cfg.dp_level == "client":
            sigma, rounds = client_noise_multiplier(cfg), self.history.rounds_aggregated()
            spent = (
                epsilon_spent([(sigma, 1.0, rounds)], delta=cfg.delta, accountant=cfg.accountant)
                if sigma > 0
                else float("inf")
            )
            return {
                **common,
                "level": "client (each site's whole contribution; the server sees raw updates)",
                "unit": "site",
                "epsilon_spent": spent,
                "noise_multiplier": sigma,
                "sample_rate": 1.0,
                "steps": rounds,
                "max_grad_norm": cfg.client_clip,
                "history": [[sigma, 1.0, rounds]] if rounds else [],
                "client_dp": {
                    "noise_multiplier": sigma,
                    "clipping_norm": cfg.client_clip,
                    "sites_sampled": sites_connected,
                    "noise_stddev": sigma * cfg.client_clip / max(sites_connected, 1),
                    "mechanism": "radfl ClientLevelDP: uniform weights, fixed denominator (McMahan et al. 2018)",
                },
            }
        spent = [s["epsilon_spent"] for s in per_site if "epsilon_spent" in s]
        worst = max(
            per_site,
            key=lambda s: float("inf") if s.get("epsilon_spent") == "inf" else s.get("epsilon_spent", -1),
            default={},
        )
        level = (
            "example (each site's reports)" if cfg.dp_level == "sample" else "example, distributed noise under SecAgg+"
        )
        return {
            **common,
            "level": level,
            "epsilon_spent": worst.get("epsilon_spent", float("inf") if not spent else None),
            "noise_multiplier": worst.get("noise_multiplier"),
            "sample_rate": worst.get("sample_rate"),
            "steps": worst.get("steps"),
            "max_grad_norm": None,
        }
