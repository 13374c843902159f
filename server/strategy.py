"""FedAvg over adapter arrays that records every site's reply, and radfl's client-level DP aggregate.

Flower's FedAvg does the weighted average (weights: each site's public `num-examples`, derived from
its sampling rate and batch size, never an exact count). The subclass records each reply in the run's
`RoundHistory`, skips sites that declined or failed, keeps the global adapter when fewer than
`min_replies` sites trained, and asks the sites to evaluate only the final adapter.
"""

from __future__ import annotations

import os

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord
from flwr.serverapp.strategy import FedAvg

from common import records as R
from server.history import RoundHistory, site_row


class AdapterFedAvg(FedAvg):
    def __init__(
        self,
        *,
        history: RoundHistory,
        round_offset: int = 0,
        min_replies: int = 1,
        final_round: int = 0,
        site_evaluation: bool = True,
        **kwargs,
    ):
        super().__init__(weighted_by_key=R.WEIGHT, arrayrecord_key=R.ARRAYS, configrecord_key=R.CONFIG, **kwargs)
        self.history = history
        self.round_offset = round_offset  # rounds finished before a resume
        self.min_replies = min_replies
        self.final_round = final_round  # server round whose adapter the sites may evaluate (their policy decides)
        self.site_evaluation = site_evaluation
        self.sent: ArrayRecord | None = None
        self.sampled = 0

    def configure_train(self, server_round, arrays, config, grid):
        config[R.GLOBAL_ROUND] = server_round + self.round_offset
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self.sent, self.sampled = arrays, len(messages)
        return messages

    def configure_evaluate(self, server_round, arrays, config, grid):
        if not self.site_evaluation or server_round != self.final_round:
            return []
        config[R.FINAL] = 1
        return super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        rows = [site_row(r) for r in replies]
        usable = [r for r, row in zip(replies, rows, strict=True) if row["status"] == "trained"]
        global_round = server_round + self.round_offset
        if len(usable) < self.min_replies:
            self.history.record_train(
                global_round, rows, False, f"too few usable replies (< {self.min_replies}): global adapter unchanged"
            )
            return None, None
        arrays, metrics = self.combine(usable)
        self.history.record_train(global_round, rows, arrays is not None)
        return arrays, metrics

    def combine(self, usable):
        """FedAvg of the trained replies, weighted by their public weights."""
        return super().aggregate_train(0, usable)

    def aggregate_evaluate(self, server_round, replies):
        rows = []
        for reply in replies:
            row = site_row(reply, train=False)
            if row["status"] == "trained":  # an evaluation that was answered
                metrics = dict(reply.content[R.METRICS])
                row = {
                    "site": row["site"],
                    "status": "evaluated",
                    "test_reports": int(metrics.get(R.TEST_REPORTS, 0)),
                    **{k.replace("-", "_"): float(metrics[k]) for k in R.EVAL_METRICS if k in metrics},
                }
            rows.append(row)
        self.history.record_site_evaluation(server_round + self.round_offset, rows)
        return None


class ClientLevelDP(AdapterFedAvg):
    """Client-level DP (McMahan et al. 2018, DP-FedAvg with a fixed denominator): each site's update is
    clipped to C, the clipped updates are summed over the sites that trained, and the sum is divided by
    the number of sites *sampled* — a site that declines or fails contributes zero — plus Gaussian noise
    of standard deviation σC/n. One site changes the average by at most C/n whatever the others do, so
    each round is a Gaussian mechanism with multiplier σ on every site's whole contribution, and R
    rounds compose to the ε recorded (q = 1: every site is sampled every round). Uniform weights: a
    site-reported size would change the sensitivity. The server sees each raw update: this protects
    against other sites and the model's users, not against the server (docs/privacy.md).
    """

    def __init__(self, *, noise_multiplier: float, clipping_norm: float, **kwargs):
        super().__init__(**kwargs)
        self.noise_multiplier, self.clipping_norm = noise_multiplier, clipping_norm
        self.generator = np.random.default_rng(int.from_bytes(os.urandom(16), "little"))  # noise nobody can replay

    def combine(self, usable):
        base = {k: v.numpy().astype(np.float64) for k, v in self.sent.items()}
        total = {k: np.zeros_like(v) for k, v in base.items()}
        for reply in usable:
            update = {k: v.numpy().astype(np.float64) - base[k] for k, v in reply.content[R.ARRAYS].items()}
            norm = float(np.sqrt(sum((u**2).sum() for u in update.values())))
            scale = min(1.0, self.clipping_norm / (norm + 1e-12))
            for k, u in update.items():
                total[k] += u * scale
        n = max(self.sampled, len(usable))
        std = self.noise_multiplier * self.clipping_norm / n
        arrays = ArrayRecord(
            {
                k: Array(
                    (base[k] + total[k] / n + self.generator.normal(0.0, std, size=base[k].shape)).astype(np.float32)
                )
                for k in base
            }
        )
        return arrays, MetricRecord({"sites-aggregated": len(usable), "sites-sampled": n})
