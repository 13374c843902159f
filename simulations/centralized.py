"""Centralized DP-LoRA: the paper's setting, one site holding every training report."""

from __future__ import annotations

import time
from pathlib import Path

from common.config import RunConfig
from common.data import load_reports, prepare
from common.metrics import compute_metrics
from common.model import build_classifier, lora_spec, resolve_device, save_classifier
from common.partition import dataset_splits
from common.privacy import PrivacyLedger, steps_for
from common.guard import autocast_is_safe, choose_grad_sample_mode
from common.runtime import autocast_dtype, configure_threads
from common.training import predict_probs, train_local
from common.outputs import save_predictions, versions, write_record


def run_centralized(cfg: RunConfig, *, show_progress: bool = True) -> dict:
    """Train on the pooled training split, evaluate on the test split, save adapter + metrics.json."""
    started = time.perf_counter()
    threads = configure_threads()
    device = resolve_device(cfg.device)
    reports = load_reports(cfg)
    train_idx, _, _ = dataset_splits(reports, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed)
    # Plan the privacy budget before anything slow: an impossible ε or δ fails in a second.
    steps = steps_for(cfg.epochs, len(train_idx), cfg.batch_size)
    ledger = PrivacyLedger.plan(target_epsilon=cfg.epsilon, delta=cfg.delta, n_examples=len(train_idx), batch_size=cfg.batch_size,
                                steps=steps, max_grad_norm=cfg.max_grad_norm, accountant=cfg.accountant)
    classifier = build_classifier(cfg.model, reports.label_names, lora=lora_spec(cfg, federated=False), device=device)
    data = prepare(cfg, classifier.tokenizer, reports)
    amp = autocast_dtype(device)  # inference; training under DP only where the guard says Opacus stays correct
    mode = choose_grad_sample_mode(classifier.model, cfg.grad_sample_mode) if ledger.private else None
    train_amp = amp if not ledger.private or autocast_is_safe(classifier.model, mode, amp) else None
    bar = _progress(steps * cfg.batch_size, show_progress)
    result = train_local(
        classifier.model, data.dataset(data.train), ledger=ledger, steps=steps, batch_size=cfg.batch_size, lr=cfg.train_lr, optimizer=cfg.train_optimizer,
        pad_id=classifier.pad_id, device=device, seed=cfg.seed, grad_sample_mode=mode or "hooks",
        autocast_dtype=train_amp, progress=bar.step)
    bar.close()
    evaluated = {}
    for split, index in (("val", data.val), ("test", data.test)):
        probs = predict_probs(classifier.model, data.dataset(index), pad_id=classifier.pad_id, device=device, autocast_dtype=amp)
        evaluated[split] = compute_metrics(data.reports.labels[index], probs, data.label_names)
    out = Path(cfg.out)
    save_predictions(out, data.reports.labels[data.test], probs)
    save_classifier(classifier, out / "adapter", model_name=cfg.model, max_length=cfg.max_length)
    record = {
        "mode": "centralized",
        "config": cfg.to_dict(),
        "privacy": ledger.summary(),
        "metrics": evaluated["test"],
        "val_metrics": evaluated["val"],
        "data": data.sizes(),
        "timing": {"train_seconds": result.seconds, "examples_per_second": result.examples / max(result.seconds, 1e-9),
                   "total_seconds": time.perf_counter() - started, "examples_seen": result.examples, "steps": result.steps},
        "runtime": {"optimizer": cfg.train_optimizer, "lr": cfg.train_lr, "device": str(device), "threads": threads, "autocast": str(amp) if amp else None, "train_autocast": str(train_amp) if train_amp else None,
                    "grad_sample_mode": mode,
                    "model_source": classifier.source, "versions": versions()},
        "train_loss": result.mean_loss,
    }
    write_record(out, record)
    return record


class _progress:
    """A tqdm bar over training examples, or nothing."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="ex", desc="training", dynamic_ncols=True)

    def step(self, examples: int, loss) -> None:
        if self.bar is not None:
            self.bar.update(examples)
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
