"""A hospital's long-lived state: its model and data (per process) and its privacy ledger (per run).

The base encoder and the tokenized reports are built once per process and reused every round
(Flower's simulation engine keeps its worker processes between rounds); only the adapter arrays
change hands. The privacy ledger is kept in `context.state` and mirrored to a file in the site's
state folder, so a resumed run or a restarted SuperNode continues the same accounting instead of
starting from ε = 0.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.config import RunConfig
from common.data import PreparedData, Site, prepare, site_data
from common.guard import autocast_is_safe, choose_grad_sample_mode
from common.runtime import autocast_dtype
from common.model import Classifier, build_classifier, load_tokenizer, lora_spec, resolve_device
from common.privacy import PrivacyLedger, steps_for
from common.records import LEDGER


@dataclass
class SiteSession:
    classifier: Classifier
    data: PreparedData
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    device: object
    grad_sample_mode: str  # checked by the per-sample gradient guard for this model
    batch_size: int  # this site's expected batch
    train_autocast: object  # bf16 on CUDA where the guard accepts it, else None


def session(cfg: RunConfig, site: Site) -> SiteSession:
    return _session(json.dumps(cfg.to_flower(), sort_keys=True), site)


@functools.lru_cache(maxsize=8)
def _session(cfg_json: str, site: Site) -> SiteSession:
    cfg = RunConfig.from_flower(json.loads(cfg_json))
    device = resolve_device(cfg.device)
    data, train, val, test = site_data(cfg, site, load_tokenizer(cfg.model), None if site.data_path else _pool(cfg_json))
    classifier = build_classifier(cfg.model, data.label_names, lora=lora_spec(cfg, federated=True), device=device)
    private = cfg.private and cfg.dp_level == "sample"
    mode = _grad_sample_mode(cfg_json) if private else "hooks"
    amp = autocast_dtype(device)
    train_amp = amp if not private or autocast_is_safe(classifier.model, mode, amp) else None
    return SiteSession(classifier, data, train, val, test, device, mode, site_batch_size(cfg, site, len(train), len(data.train)), train_amp)


@functools.lru_cache(maxsize=2)
def _pool(cfg_json: str) -> PreparedData:
    """The shared data set of a simulation, built once per process for all the sites it hosts."""
    cfg = RunConfig.from_flower(json.loads(cfg_json))
    return prepare(cfg, load_tokenizer(cfg.model))


@functools.lru_cache(maxsize=2)
def _grad_sample_mode(cfg_json: str) -> str:
    """The guard's choice for this model, checked once per process (every site builds the same model)."""
    cfg = RunConfig.from_flower(json.loads(cfg_json))
    return choose_grad_sample_mode(build_classifier(cfg.model, ("probe",), lora=lora_spec(cfg, federated=True)).model, cfg.grad_sample_mode)


def site_batch_size(cfg: RunConfig, site: Site, n_site: int, n_pool: int) -> int:
    """Expected batch of one site. Default for a simulated site: the centralized sampling rate
    (batch-size × its share of the pool), so a site takes as many steps per epoch as centralized
    training and adds noise at the same σ; a hospital with its own data uses --batch-size."""
    if cfg.site_batch_size > 0:
        return cfg.site_batch_size
    if site.data_path or n_pool <= 0:
        return cfg.batch_size
    return max(1, round(cfg.batch_size * n_site / n_pool))


def round_steps(cfg: RunConfig, n_train: int, batch_size: int) -> int:
    return steps_for(cfg.local_epochs, n_train, batch_size)


def plan_ledger(cfg: RunConfig, n_train: int, batch_size: int) -> PrivacyLedger:
    """Noise for the whole run, calibrated once: every round's local steps at this site's sample rate."""
    epsilon = cfg.epsilon if cfg.dp_level == "sample" else float("inf")  # client-level DP: noise at the server
    return PrivacyLedger.plan(target_epsilon=epsilon, delta=cfg.delta, n_examples=n_train, batch_size=batch_size,
                              steps=cfg.rounds * round_steps(cfg, n_train, batch_size), max_grad_norm=cfg.max_grad_norm,
                              accountant=cfg.accountant)


def ledger_file(cfg: RunConfig, site: Site, state_dir: str) -> Path:
    """Where this site mirrors its ledger: one file per (run output, site), under the site's state folder."""
    key = hashlib.sha256(f"{os.path.abspath(cfg.out)}|{cfg.seed}|{cfg.dataset}|{site.data_path}".encode()).hexdigest()[:12]
    return Path(state_dir) / f"ledger-{site.name}-{key}.json"


def restore_ledger(state, path: Path) -> PrivacyLedger | None:
    """The ledger from `context.state`, else from the site's file, else None (a fresh run)."""
    if LEDGER in state.config_records:
        return PrivacyLedger.from_dict(json.loads(state.config_records[LEDGER]["json"]))
    if path.is_file():
        return PrivacyLedger.from_dict(json.loads(path.read_text()))
    return None


def store_ledger(state, path: Path, ledger: PrivacyLedger) -> None:
    from flwr.app import ConfigRecord

    text = json.dumps(ledger.to_dict())
    state[LEDGER] = ConfigRecord({"json": text})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
