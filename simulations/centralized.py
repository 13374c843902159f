"""Centralized DP-LoRA: the paper's setting, one site holding every training report."""

from __future__ import annotations

import math
import time
from pathlib import Path

from common.config import RunConfig
from common.data import load_reports, prepare
from common.evaluation import choose_thresholds, evaluate
from common.guard import autocast_is_safe, choose_grad_sample_mode
from common.model import build_classifier, load_tokenizer, lora_spec, resolve_device, save_classifier
from common.outputs import save_predictions, versions
from common.partition import dataset_splits
from common.privacy import PrivacyLedger
from common.recipe import recipe_for
from common.run_record import RunRecord
from common.runtime import autocast_dtype, configure_threads
from common.training import predict_probs, train_local, validation_loss
from common.warmstart import apply_warm_start


def patient_units(reports, index) -> list[list[int]]:
    """Positions (in `index`) of each patient's reports: the privacy units of patient-level DP."""
    members: dict[str, list[int]] = {}
    for position, i in enumerate(index):
        members.setdefault(reports.patient_ids[i], []).append(position)
    return list(members.values())


def plan(cfg: RunConfig, n_units: int, *, reports_per_unit: float = 1.0):
    """The recipe and the privacy ledger of a run over `n_units`: fails in a second on an impossible ε or δ."""
    recipe = recipe_for(cfg, n_units, reports_per_unit=reports_per_unit)
    ledger = PrivacyLedger.plan(
        target_epsilon=cfg.epsilon,
        delta=cfg.delta,
        n_examples=n_units,
        batch_size=recipe.batch_size,
        steps=recipe.steps,
        max_grad_norm=recipe.max_grad_norm or 1.0,
        accountant=cfg.accountant,
    )
    return recipe, ledger


def run_centralized(cfg: RunConfig, *, show_progress: bool = True, log=print) -> dict:
    """Train on the pooled training split, evaluate on the test split, save adapter + metrics.json."""
    started = time.perf_counter()
    threads = configure_threads()
    device = resolve_device(cfg.device)
    reports = load_reports(cfg)
    splits = dataset_splits(reports, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed)
    units = patient_units(reports, splits[0]) if cfg.privacy_unit == "patient" and cfg.private else None
    recipe, ledger = plan(
        cfg, len(units) if units else len(splits[0]), reports_per_unit=len(splits[0]) / len(units) if units else 1.0
    )
    log(f"recipe: {recipe.reason}")
    data = prepare(cfg, load_tokenizer(cfg.model), reports, splits=splits)
    classifier = build_classifier(cfg.model, reports.label_names, lora=lora_spec(cfg, federated=False), device=device)
    warm = apply_warm_start(classifier, cfg, log=log)
    amp = autocast_dtype(device)  # inference; training under DP only where the guard says Opacus stays correct
    warm_record = None
    if warm is not None:  # the zero-ε baseline: the public start alone on this test split
        start_thresholds, _ = choose_thresholds(cfg, classifier, data, device, private=True, autocast_dtype=amp)
        start_metrics, _ = evaluate(
            classifier, data, data.test, device, thresholds=start_thresholds, autocast_dtype=amp
        )
        warm_record = {**warm.record(), "test_metrics": start_metrics}
        log(
            f"warm start alone (no private report, epsilon 0): weighted F1 {start_metrics['weighted_f1']:.3f}, "
            f"macro AUROC {start_metrics['macro_auroc'] or float('nan'):.3f}"
        )
    mode = choose_grad_sample_mode(classifier.model, cfg.grad_sample_mode) if ledger.private else None
    train_amp = amp if not ledger.private or autocast_is_safe(classifier.model, mode, amp) else None
    validate = None
    if recipe.early_stopping:

        def validate():
            return validation_loss(
                classifier.model, data.dataset(data.val), pad_id=classifier.pad_id, device=device, autocast_dtype=amp
            )

    bar = _progress(recipe.steps * recipe.batch_size, show_progress)
    result = train_local(
        classifier.model,
        data.dataset(data.train),
        ledger=ledger,
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        head_lr=recipe.head_lr,
        optimizer=recipe.optimizer,
        pad_id=classifier.pad_id,
        device=device,
        seed=cfg.seed,
        grad_sample_mode=mode or "hooks",
        units=units,
        autocast_dtype=train_amp,
        progress=bar.step,
        validate=validate,
        eval_every=recipe.eval_every,
        patience=recipe.patience,
    )
    bar.close()
    # Without DP one pass over the validation split gives the thresholds and the validation metrics. Under
    # DP nothing uses the validation split (thresholds come from public reports), so it is not scored: the
    # test split is the held-out figure either way (as in a federation, whose metrics.json has none either).
    val_probs = val_metrics = None
    if not ledger.private:
        val_probs = predict_probs(
            classifier.model, data.dataset(data.val), pad_id=classifier.pad_id, device=device, autocast_dtype=amp
        )
    thresholds, rule = choose_thresholds(
        cfg, classifier, data, device, private=ledger.private, autocast_dtype=amp, val_probs=val_probs
    )
    if val_probs is not None:
        val_metrics, _ = evaluate(
            classifier, data, data.val, device, thresholds=thresholds, autocast_dtype=amp, probs=val_probs
        )
    metrics, probs = evaluate(classifier, data, data.test, device, thresholds=thresholds, autocast_dtype=amp)
    baselines = None
    if cfg.baseline == "on":
        from common.baselines import run_baselines

        baselines = run_baselines(data, epsilon=cfg.epsilon, delta=cfg.delta, seed=cfg.seed, accountant=cfg.accountant)
    out = Path(cfg.out)
    save_predictions(out, data.reports.labels[data.test], probs, thresholds)
    values = {
        n: float(t)
        for n, t in zip(
            data.label_names,
            [thresholds] * len(data.label_names) if isinstance(thresholds, float) else thresholds,
            strict=True,
        )
    }
    save_classifier(classifier, out / "adapter", model_name=cfg.model, max_length=cfg.max_length, thresholds=values)
    record = RunRecord(
        mode="centralized",
        config=cfg.to_dict(),
        privacy={
            "level": "example (each report)"
            if cfg.privacy_unit == "report"
            else "patient (all of a patient's reports)",
            "unit": cfg.privacy_unit,
            **ledger.summary(),
        },
        recipe=recipe.to_dict(),
        metrics=metrics,
        val_metrics=val_metrics,
        thresholds={"rule": rule, "values": values},
        warm_start=warm_record,
        baselines=baselines,
        data=data.sizes(),
        timing={
            "train_seconds": result.seconds,
            "examples_per_second": result.examples / max(result.seconds, 1e-9),
            "total_seconds": time.perf_counter() - started,
            "examples_seen": result.examples,
            "steps": result.steps,
            "best_step": result.best_step,
            "empty_batches": result.empty_batches,
        },
        runtime={
            "optimizer": recipe.optimizer,
            "lr": recipe.lr,
            "head_lr": recipe.head_lr,
            "device": str(device),
            "threads": threads,
            "grad_sample_mode": mode,
            "train_autocast": str(train_amp) if train_amp else None,
            "model_source": classifier.source,
            "versions": versions(),
            "train_loss": result.mean_loss,
            "validation": result.validation,
        },
        evaluation="test split (held out by patient)",
    )
    record.write(out)
    return record.to_dict()


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
            if loss is not None and not math.isnan(loss):
                self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
