"""The server's own evaluation of the global adapter, where the server holds reports (simulations only).

In a deployment the server holds no reports: evaluation then comes from the sites, only where their
policies allow plain metrics of the final adapter. In a simulation the researcher's server holds the
pooled test split and monitors every round on a fixed subset of it, the whole split in the last.
"""

from __future__ import annotations

from common.data import load_reports, prepare
from common.errors import InputError
from common.evaluation import choose_thresholds, evaluate
from common.model import load_tokenizer
from common.runtime import autocast_dtype

MONITOR_REPORTS = 512  # test reports that monitor the rounds before the last


class ServerEvaluator:
    def __init__(self, cfg, classifier, device):
        self.cfg, self.classifier, self.device = cfg, classifier, device
        self.data = self._held_data()
        self.last_probs = None
        self.thresholds, self.rule = 0.5, "0.5"

    def _held_data(self):
        if self.cfg.dataset in ("mimic-cxr", "ct-rate", "csv") and not self.cfg.data:
            return None  # deployment: the reports stay at the hospitals
        try:
            data = prepare(self.cfg, load_tokenizer(self.cfg.model), load_reports(self.cfg))
        except InputError:
            return None
        if data.label_names != self.classifier.label_names:
            raise InputError(f"the server's data has labels {data.label_names}, not {self.classifier.label_names}")
        return data

    def evaluate(self, *, final: bool) -> dict | None:
        """Metrics of the classifier's current adapter: a monitor subset before the last round, all of the test split in it."""
        if self.data is None:
            return None
        amp = autocast_dtype(self.device)
        if final:
            # Under any DP level the validation reports are the sites' too: the public rule, never them.
            self.thresholds, self.rule = choose_thresholds(
                self.cfg, self.classifier, self.data, self.device, private=self.cfg.private, autocast_dtype=amp
            )
        test = self.data.test if final else self.data.test[:MONITOR_REPORTS]
        metrics, probs = evaluate(
            self.classifier,
            self.data,
            test,
            self.device,
            thresholds=self.thresholds if final else 0.5,
            autocast_dtype=amp,
        )
        if final:
            self.last_probs = probs
        return metrics
