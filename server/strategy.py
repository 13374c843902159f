"""FedAvg over adapter arrays, weighted by training examples, that records every site's reply.

Flower's FedAvg does the weighted average. This subclass adds what a privacy officer needs: each
site's ε, σ, q and steps per round, sites that declined (budget spent) or failed, and a round
with too few usable replies that leaves the global adapter unchanged instead of ending the run.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg

from common import records as R


class AdapterFedAvg(FedAvg):
    def __init__(self, *, round_offset: int = 0, min_replies: int = 1, on_train_round=None, on_evaluate_round=None,
                 site_evaluation_rounds=None, **kwargs):
        super().__init__(weighted_by_key=R.NUM_EXAMPLES, arrayrecord_key=R.ARRAYS, configrecord_key=R.CONFIG, **kwargs)
        self.round_offset = round_offset  # rounds finished before a resume
        self.min_replies = min_replies
        self.on_train_round = on_train_round  # callback(global_round, rows, aggregated: bool)
        self.on_evaluate_round = on_evaluate_round  # callback(global_round, rows)
        # Server rounds in which the sites evaluate on their own test splits (None: every round).
        self.site_evaluation_rounds = site_evaluation_rounds
        self.train_rows: dict[int, list[dict]] = {}
        self.evaluate_rows: dict[int, list[dict]] = {}

    def configure_train(self, server_round, arrays, config, grid):
        config[R.GLOBAL_ROUND] = server_round + self.round_offset
        return super().configure_train(server_round, arrays, config, grid)

    def configure_evaluate(self, server_round, arrays, config, grid):
        if self.site_evaluation_rounds is not None and server_round not in self.site_evaluation_rounds:
            return []
        return super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        rows, usable = [], []
        for reply in replies:
            if reply.has_error():
                rows.append({"status": "failed", "error_code": int(reply.error.code), "error": reply.error.reason.splitlines()[-1][:300]})
                continue
            metrics = dict(reply.content[R.METRICS])
            declined = metrics.get(R.DECLINED, 0.0) >= 1.0 or R.ARRAYS not in reply.content.array_records
            row = {"status": "declined" if declined else "trained", **{k: float(v) for k, v in metrics.items()}}
            if not declined:  # what this site sent: the serialized adapter arrays
                row["bytes"] = sum(len(a.data) for a in reply.content[R.ARRAYS].values())
            rows.append(row)
            if not declined:
                usable.append(reply)
        global_round = server_round + self.round_offset
        self.train_rows[global_round] = rows
        if len(usable) < self.min_replies:
            if self.on_train_round:
                self.on_train_round(global_round, rows, False)
            return None, None  # too few replies: the global adapter stays as it was
        arrays, metrics = super().aggregate_train(server_round, usable)
        if self.on_train_round:
            self.on_train_round(global_round, rows, arrays is not None)
        return arrays, metrics

    def aggregate_evaluate(self, server_round, replies):
        usable = [r for r in replies if not r.has_error()]
        rows = [{k: float(v) for k, v in dict(r.content[R.METRICS]).items()} for r in usable]
        self.evaluate_rows[server_round + self.round_offset] = rows
        if self.on_evaluate_round:
            self.on_evaluate_round(server_round + self.round_offset, rows)
        return super().aggregate_evaluate(server_round, usable) if usable else None
