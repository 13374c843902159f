"""From a run configuration to tokenized train / val / test sets: the data half of every run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.config import RunConfig
from common.datasets import ReportSet, load_ct_rate, load_mimic_cxr, load_table
from common.errors import InputError
from common.partition import dataset_splits, partition_sites
from common.synthetic import generate
from common.tokens import TokenizedReports, tokenize


def load_reports(cfg: RunConfig) -> ReportSet:
    """The reports `cfg.dataset` names: a synthetic default or a real layout read from `cfg.data`."""
    # Checked here, not in RunConfig: a deployed ServerApp has no path (each site's SuperNode names its own).
    if cfg.dataset in ("mimic-cxr", "ct-rate", "csv") and not cfg.data:
        raise InputError(f"--dataset {cfg.dataset} needs --data PATH")
    if cfg.dataset == "synthetic-mimic":
        return generate("mimic-cxr", n_reports=cfg.synthetic_reports, seed=cfg.seed, label_noise=cfg.label_noise).to_report_set(cfg.uncertainty)
    if cfg.dataset == "synthetic-ctrate":
        return generate("ct-rate", n_reports=cfg.synthetic_reports, seed=cfg.seed, label_noise=cfg.label_noise).to_report_set()
    if cfg.dataset == "mimic-cxr":
        return load_mimic_cxr(cfg.data, labeler=cfg.labeler, uncertainty=cfg.uncertainty)
    if cfg.dataset == "ct-rate":
        return load_ct_rate(cfg.data)
    columns = [c.strip() for c in cfg.label_columns.split(",") if c.strip()] or None
    return load_table(cfg.data, text_column=cfg.text_column, label_columns=columns, uncertainty=cfg.uncertainty)


@dataclass
class PreparedData:
    reports: ReportSet
    ids: list[np.ndarray]  # token ids of every report
    train: np.ndarray  # report indices
    val: np.ndarray
    test: np.ndarray

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.reports.label_names

    def dataset(self, index) -> TokenizedReports:
        return TokenizedReports([self.ids[i] for i in index], self.reports.labels[index])

    def sizes(self) -> dict:
        return {"n_train": int(len(self.train)), "n_val": int(len(self.val)), "n_test": int(len(self.test)),
                "n_reports": int(len(self.reports)), "skipped": dict(self.reports.skipped),
                "mean_tokens": float(np.mean([len(x) for x in self.ids])) if self.ids else 0.0}

    def site_splits(self, cfg: RunConfig) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each site's (train, val, test) indices: every split partitioned the same way by patient.

        Splitting first and partitioning second keeps the union of the sites' training reports equal
        to the centralized training set, so centralized and federated runs compare like for like.
        """
        # One seed for all three splits: the same Dirichlet shares, so a site's test reports are
        # skewed like its training reports.
        parts = [partition_sites(self.reports, idx, n_sites=cfg.sites, scheme=cfg.partition, alpha=cfg.alpha, seed=cfg.seed)
                 for idx in (self.train, self.val, self.test)]
        return list(zip(*parts))


def prepare(cfg: RunConfig, tokenizer, reports: ReportSet | None = None) -> PreparedData:
    """Load (unless given), split by patient and tokenize (cached) the reports of `cfg`."""
    reports = load_reports(cfg) if reports is None else reports
    if len(reports) == 0:
        raise InputError("the data set holds no reports")
    train, val, test = dataset_splits(reports, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed)
    ids = tokenize(reports.texts, tokenizer, max_length=cfg.max_length, fingerprint=reports.fingerprint())
    return PreparedData(reports, ids, train, val, test)


@dataclass(frozen=True)
class Site:
    """Who a client is: a partition of one data set (simulation) or a hospital's own files (deployment)."""

    index: int
    count: int
    name: str
    data_path: str = ""  # deployment: the site's own reports
    data_format: str = ""  # mimic-cxr, ct-rate or csv

    @classmethod
    def from_node_config(cls, node_config: dict) -> "Site":
        """Flower node config → Site. Simulation gives partition-id/num-partitions; a hospital's
        SuperNode gives data-path, data-format and site-name (and nothing about patients)."""
        path = str(node_config.get("data-path", ""))
        fmt = str(node_config.get("data-format", ""))
        if path and fmt not in ("mimic-cxr", "ct-rate", "csv"):
            raise InputError(f"node config data-format {fmt!r} must be mimic-cxr, ct-rate or csv")
        if path and "partition-id" not in node_config:
            # The server tells sites apart by this number in their replies (per-site ε, history).
            raise InputError("node config needs a distinct partition-id per site (0, 1, 2, ...) beside data-path")
        index = int(node_config.get("partition-id", 0))
        count = int(node_config.get("num-partitions", 1))
        return cls(index, count, str(node_config.get("site-name", f"site-{index}")), path, fmt)


def site_data(cfg: RunConfig, site: Site, tokenizer, pool: PreparedData | None = None):
    """This site's data and its (train, val, test) report indices.

    A site with its own files splits them by patient; a simulated site takes its partition of
    each split of the shared data set `pool` (see `PreparedData.site_splits`).
    """
    if site.data_path:
        data = prepare(cfg.replace(dataset=site.data_format, data=site.data_path), tokenizer)
        return data, data.train, data.val, data.test
    data = pool or prepare(cfg, tokenizer)
    train, val, test = data.site_splits(cfg.replace(sites=site.count))[site.index]
    return data, train, val, test
