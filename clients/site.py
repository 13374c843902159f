"""A hospital's long-lived state: its model and data (per process), its split and its lifetime ledger (on disk).

The base encoder and the tokenized reports are built once per process and reused every round
(Flower's simulation engine keeps its worker processes between rounds); only adapter arrays change
hands. A deployed site reads its reports from its own `data-path`, splits them once with a seed it
draws itself and keeps in its state folder, and tokenizes them into that folder (owner-only): the
run config never chooses a site's data, its held-out reports or where plain copies are kept.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clients.policy import SitePolicy
from common.config import RunConfig
from common.data import PreparedData, label_names_for, prepare
from common.guard import autocast_is_safe, choose_grad_sample_mode
from common.model import Classifier, build_classifier, load_tokenizer, lora_spec, resolve_device
from common.runtime import autocast_dtype
from common.warmstart import apply_warm_start


@dataclass
class SiteSession:
    classifier: Classifier
    data: PreparedData
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    device: object
    grad_sample_mode: str  # checked by the per-sample gradient guard for this model
    train_autocast: object  # bf16 on CUDA where the guard accepts it, else None
    fingerprint: str  # of the site's reports: the key of its lifetime ledger

    def units(self, unit: str) -> list | None:
        """Patient-level DP: the site's training reports grouped by patient (positions in `train`)."""
        if unit != "patient":
            return None
        members: dict[str, list[int]] = {}
        for position, i in enumerate(self.train):
            members.setdefault(self.data.reports.patient_ids[i], []).append(position)
        return list(members.values())

    def n_units(self, unit: str) -> int:
        return len(self.units(unit)) if unit == "patient" else len(self.train)


def session(cfg: RunConfig, policy: SitePolicy) -> SiteSession:
    # Only what shapes the model and the data keys the cache; privacy settings never do.
    key = {
        k: v
        for k, v in cfg.to_flower().items()
        if k.split(".")[0] in ("data", "model", "lora")
        or k in ("train.seed", "train.device", "fl.sites", "fl.partition", "fl.alpha", "fl.aggregation", "fl.dp-level")
    }
    return _session(json.dumps(key, sort_keys=True), policy)


@functools.lru_cache(maxsize=4)
def _session(key_json: str, policy: SitePolicy) -> SiteSession:
    cfg = RunConfig.from_flower({**RunConfig().to_flower(), **json.loads(key_json)})
    device = resolve_device(cfg.device)
    tokenizer = load_tokenizer(cfg.model)
    if policy.simulated:
        pool = _pool(key_json)
        train, val, test = pool.site_splits(cfg.replace(sites=policy.num_partitions))[max(policy.partition_id, 0)]
        data = pool
    else:
        data = _own_data(cfg, policy, tokenizer)
        train, val, test = data.train, data.val, data.test
    labels = label_names_for(cfg)
    if tuple(data.label_names) != tuple(labels):
        column = {n: i for i, n in enumerate(data.label_names)}
        data = PreparedData(
            data.reports.with_labels(labels, [column[n] for n in labels]), data.ids, data.train, data.val, data.test
        )
    classifier = build_classifier(cfg.model, labels, lora=lora_spec(cfg, federated=True), device=device)
    apply_warm_start(classifier, cfg)  # public: built from synthetic reports, the same at every site and the server
    mode = _grad_sample_mode(key_json)
    amp = autocast_dtype(device)
    train_amp = amp if autocast_is_safe(classifier.model, mode, amp) else None
    own = np.concatenate([train, val, test])
    fingerprint = _fingerprint([data.reports.texts[i] for i in sorted(own)])
    return SiteSession(classifier, data, train, val, test, device, mode, train_amp, fingerprint)


def _own_data(cfg: RunConfig, policy: SitePolicy, tokenizer) -> PreparedData:
    """A deployed site's reports from its node config, split once with the site's own seed."""
    state = Path(policy.state_folder())
    site_cfg = cfg.replace(
        dataset=policy.data_format,
        data=policy.data_path,
        text_column=policy.text_column,
        label_columns=policy.label_columns if policy.data_format == "csv" else "",
    )
    from common.data import load_reports

    reports = load_reports(site_cfg)
    split = _split_record(state, _fingerprint(reports.texts), policy)
    return prepare(
        site_cfg,
        tokenizer,
        reports,
        split_seed=split["seed"],
        fractions=(split["val_fraction"], split["test_fraction"]),
        cache=state / "cache",
    )


def _split_record(state: Path, fingerprint: str, policy: SitePolicy) -> dict:
    """The site's split of one data set: drawn once (OS entropy), kept, never chosen by a run."""
    path = state / "splits" / f"{fingerprint}.json"
    if path.is_file():
        return json.loads(path.read_text())
    record = {
        "seed": int.from_bytes(os.urandom(4), "little"),
        "val_fraction": policy.val_fraction,
        "test_fraction": policy.test_fraction,
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    try:
        os.link(tmp, path)  # first writer wins: two processes of one site agree on one split
    except FileExistsError:
        pass
    tmp.unlink()
    return json.loads(path.read_text())


def _fingerprint(texts) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


@functools.lru_cache(maxsize=2)
def _pool(key_json: str) -> PreparedData:
    """The shared data set of a simulation, built once per process for all the sites it hosts."""
    cfg = RunConfig.from_flower({**RunConfig().to_flower(), **json.loads(key_json)})
    return prepare(cfg, load_tokenizer(cfg.model))


@functools.lru_cache(maxsize=2)
def _grad_sample_mode(key_json: str) -> str:
    """The guard's choice for this model, checked once per process; the guard always runs."""
    cfg = RunConfig.from_flower({**RunConfig().to_flower(), **json.loads(key_json)})
    return choose_grad_sample_mode(
        build_classifier(cfg.model, ("probe",), lora=lora_spec(cfg, federated=True)).model, "auto"
    )


def fedavg_weight(sample_rate: float, batch_size: int) -> float:
    """FedAvg weight from public numbers: batches per epoch (1/q) x expected batch. Never an exact count."""
    return float(round(1.0 / sample_rate) * batch_size)
