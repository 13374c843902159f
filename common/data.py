"""From a run configuration to tokenized train / val / test sets: the data half of every run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.config import RunConfig
from common.datasets import ReportSet, load_ct_rate, load_mimic_cxr, load_table
from common.errors import InputError
from common.labels import CT_RATE, MIMIC_CXR
from common.partition import dataset_splits, partition_sites
from common.synthetic import generate
from common.tokens import TokenizedReports, tokenize


def load_reports(cfg: RunConfig) -> ReportSet:
    """The reports `cfg.dataset` names: a synthetic default or a real layout read from `cfg.data`."""
    # Checked here, not in RunConfig: a deployed ServerApp has no path (each site's SuperNode names its own).
    if cfg.dataset in ("mimic-cxr", "ct-rate", "csv") and not cfg.data:
        raise InputError(f"--dataset {cfg.dataset} needs --data PATH")
    if cfg.dataset == "synthetic-mimic":
        return generate(
            "mimic-cxr",
            n_reports=cfg.synthetic_reports,
            seed=cfg.seed,
            label_noise=cfg.label_noise,
            difficulty=cfg.synthetic_difficulty,
        ).to_report_set(cfg.uncertainty)
    if cfg.dataset == "synthetic-ctrate":
        return generate(
            "ct-rate",
            n_reports=cfg.synthetic_reports,
            seed=cfg.seed,
            label_noise=cfg.label_noise,
            difficulty=cfg.synthetic_difficulty,
        ).to_report_set()
    if cfg.dataset == "mimic-cxr":
        return load_mimic_cxr(cfg.data, labeler=cfg.labeler, uncertainty=cfg.uncertainty)
    if cfg.dataset == "ct-rate":
        return load_ct_rate(cfg.data)
    columns = [c.strip() for c in cfg.label_columns.split(",") if c.strip()] or None
    return load_table(cfg.data, text_column=cfg.text_column, label_columns=columns, uncertainty=cfg.uncertainty)


def label_names_for(cfg: RunConfig) -> tuple[str, ...]:
    """The label set a run trains: the data set's, or a csv run's named columns (the server builds its head from it)."""
    if cfg.dataset in ("synthetic-mimic", "mimic-cxr"):
        return MIMIC_CXR.labels
    if cfg.dataset in ("synthetic-ctrate", "ct-rate"):
        return CT_RATE.labels
    columns = tuple(c.strip() for c in cfg.label_columns.split(",") if c.strip())
    if not columns:
        raise InputError("a federated csv run needs data.label-columns so that the server can build the head")
    return columns


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
        return {
            "n_train": int(len(self.train)),
            "n_val": int(len(self.val)),
            "n_test": int(len(self.test)),
            "n_reports": int(len(self.reports)),
            "skipped": dict(self.reports.skipped),
            "mean_tokens": float(np.mean([len(x) for x in self.ids])) if self.ids else 0.0,
        }

    def site_splits(self, cfg: RunConfig) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each site's (train, val, test) indices: every split partitioned the same way by patient.

        Splitting first and partitioning second keeps the union of the sites' training reports equal
        to the centralized training set, so centralized and federated runs compare like for like.
        """
        # One seed for all three splits: the same Dirichlet shares, so a site's test reports are
        # skewed like its training reports.
        parts = [
            partition_sites(self.reports, idx, n_sites=cfg.sites, scheme=cfg.partition, alpha=cfg.alpha, seed=cfg.seed)
            for idx in (self.train, self.val, self.test)
        ]
        return list(zip(*parts, strict=True))


def prepare(
    cfg: RunConfig,
    tokenizer,
    reports: ReportSet | None = None,
    *,
    split_seed: int | None = None,
    fractions: tuple[float, float] | None = None,
    cache=None,
    splits=None,
) -> PreparedData:
    """Load (unless given), split by patient and tokenize (cached) the reports of `cfg`.

    A deployed site passes its own `split_seed` and (val, test) `fractions`, kept in its state
    folder: the run config never decides which of a site's reports are held out."""
    reports = load_reports(cfg) if reports is None else reports
    if len(reports) == 0:
        raise InputError("the data set holds no reports")
    val_fraction, test_fraction = fractions or (cfg.val_fraction, cfg.test_fraction)
    train, val, test = splits or dataset_splits(
        reports,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=cfg.seed if split_seed is None else split_seed,
    )
    ids = tokenize(reports.texts, tokenizer, max_length=cfg.max_length, fingerprint=reports.fingerprint(), cache=cache)
    return PreparedData(reports, ids, train, val, test)
