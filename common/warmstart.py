"""Start from public knowledge: an adapter trained without DP on synthetic reports, before any private step.

The synthetic generator's reports are public (a pure function of its settings and seed), so training
on them costs no privacy budget: DP fine-tuning then only has to learn the shift to a hospital's own
writing and labeler. The warm start reads no private report — no statistics, vocabulary or
thresholds of any site — and is built once per (generator settings, model, LoRA settings, label set),
then cached. In a federation every party can rebuild the same one; every site starts from it, and
under FFA-LoRA the frozen A is the warm start's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cache import cache_root
from common.errors import InputError

WARM_REPORTS = 6_000  # synthetic reports: enough for the label words, cheap enough to build once on 2 cores
WARM_SEED = 20_260  # fixed: the same public start for every run, whatever its seed
WARM_DIFFICULTY = "realistic"
WARM_SOURCES = {
    "mimic-cxr": "mimic-cxr",
    "synthetic-mimic": "mimic-cxr",
    "ct-rate": "ct-rate",
    "synthetic-ctrate": "ct-rate",
}


@dataclass(frozen=True)
class WarmStart:
    kind: str  # "synthetic" or "folder"
    path: Path  # the saved adapter
    settings: dict  # what it was built from (recorded in metrics.json)
    sha256: str  # of the adapter arrays

    def record(self) -> dict:
        return {
            "kind": self.kind,
            "path": str(self.path),
            "sha256": self.sha256,
            "settings": self.settings,
            "private_data": "none: built only from public synthetic reports"
            if self.kind == "synthetic"
            else "none read by radfl: a saved adapter given by the user",
        }


# `synthetic` builds on the realistic generator; `synthetic-easy` on the easy one, whose templates, phrase
# banks and labels share no code with the realistic generator's: on the synthetic default (realistic) it
# is a public source written differently from the "private" reports, as real public data would be.
SYNTHETIC_CHOICES = {"synthetic": WARM_DIFFICULTY, "synthetic-easy": "easy"}


def resolve(cfg) -> str:
    """`auto` is `synthetic` for real data sets whose label set the generator covers (MIMIC-CXR, CT-RATE), else `none`."""
    choice = cfg.warm_start
    if choice == "auto":
        return "synthetic" if cfg.dataset in ("mimic-cxr", "ct-rate") else "none"
    return choice


def _cache_root() -> Path:
    return cache_root("warm-start")


def settings_for(cfg) -> dict:
    kind = WARM_SOURCES.get(cfg.dataset)
    choice = resolve(cfg)
    if kind is None:
        raise InputError(
            f"--warm-start {choice} covers MIMIC-CXR and CT-RATE labels, not {cfg.dataset}; use --warm-start none or a folder"
        )
    return {
        "generator": kind,
        "difficulty": SYNTHETIC_CHOICES.get(choice, WARM_DIFFICULTY),
        "reports": WARM_REPORTS,
        "seed": WARM_SEED,
        "model": cfg.model,
        "lora_rank": cfg.lora_rank,
        "lora_alpha": cfg.lora_alpha,
        "lora_targets": cfg.lora_targets,
        "max_length": cfg.max_length,
    }


def ensure(cfg, *, log=print) -> WarmStart | None:
    """The warm start of `cfg` (None for `none`): loaded from the cache, or built there once."""
    choice = resolve(cfg)
    if choice == "none":
        return None
    if choice not in SYNTHETIC_CHOICES:
        folder = Path(choice)
        if not (folder / "radfl.json").is_file():
            raise InputError(
                f"--warm-start {choice}: not a saved radfl adapter (no radfl.json); pass an adapter folder of a run"
            )
        meta = json.loads((folder / "radfl.json").read_text())
        return WarmStart(
            "folder", folder, {"model": meta.get("model"), "label_names": meta.get("label_names")}, _digest(folder)
        )
    settings = settings_for(cfg)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = _cache_root() / key
    if not (folder / "adapter" / "radfl.json").is_file():
        _build(cfg, settings, folder, log)
    record = json.loads((folder / "warm-start.json").read_text())
    return WarmStart("synthetic", folder / "adapter", {**settings, **record.get("built", {})}, record["sha256"])


def _build(cfg, settings: dict, folder: Path, log) -> None:
    """Train LoRA + head without DP on public synthetic reports (the non-private recipe), save, and record."""
    import torch

    from common.metrics import compute_metrics
    from common.model import build_classifier, load_tokenizer, lora_spec, save_classifier
    from common.partition import patient_split
    from common.privacy import PrivacyLedger
    from common.recipe import choose
    from common.synthetic import generate
    from common.tokens import TokenizedReports, tokenize
    from common.training import predict_probs, train_local, validation_loss

    log(
        f"building the public warm start once ({settings['reports']} synthetic {settings['generator']} reports, no DP) -> {folder}"
    )
    reports = generate(
        settings["generator"], n_reports=settings["reports"], seed=settings["seed"], difficulty=settings["difficulty"]
    ).to_report_set()
    train, val, _ = patient_split(reports.patient_ids, val_fraction=0.15, test_fraction=0.0, seed=settings["seed"])
    tokenizer = load_tokenizer(cfg.model)
    ids = tokenize(reports.texts, tokenizer, max_length=settings["max_length"], fingerprint=reports.fingerprint())
    data = lambda idx: TokenizedReports([ids[i] for i in idx], reports.labels[idx])  # noqa: E731
    classifier = build_classifier(
        cfg.model, reports.label_names, lora=lora_spec(cfg.replace(seed=settings["seed"]), federated=False)
    )
    recipe = choose(len(train), epsilon=math.inf, delta=1e-5)
    ledger = PrivacyLedger.plan(
        target_epsilon=math.inf,
        delta=1e-5,
        n_examples=len(train),
        batch_size=recipe.batch_size,
        steps=recipe.steps,
        max_grad_norm=1.0,
    )
    device = torch.device("cpu")
    validate = lambda: validation_loss(classifier.model, data(val), pad_id=classifier.pad_id, device=device)  # noqa: E731
    result = train_local(
        classifier.model,
        data(train),
        ledger=ledger,
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        head_lr=recipe.head_lr,
        optimizer=recipe.optimizer,
        pad_id=classifier.pad_id,
        device=device,
        seed=settings["seed"],
        validate=validate,
        eval_every=recipe.eval_every,
        patience=recipe.patience,
    )
    probs = predict_probs(classifier.model, data(val), pad_id=classifier.pad_id, device=device)
    metrics = compute_metrics(reports.labels[val], probs, reports.label_names)
    tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_classifier(classifier, tmp / "adapter", model_name=cfg.model, max_length=settings["max_length"])
    built = {
        "steps": result.best_step or result.steps,
        "synthetic_val_weighted_f1": metrics["weighted_f1"],
        "synthetic_val_macro_auroc": metrics["macro_auroc"],
        "train_seconds": result.seconds,
    }
    (tmp / "warm-start.json").write_text(
        json.dumps({"settings": settings, "built": built, "sha256": _digest(tmp / "adapter")}, indent=1)
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first: keep its copy
    else:
        tmp.rename(folder)
    log(f"warm start ready: synthetic validation weighted F1 {metrics['weighted_f1']:.3f} after {built['steps']} steps")


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in sorted(p.name for p in Path(folder).glob("*.safetensors")):
        digest.update((Path(folder) / name).read_bytes())
    return digest.hexdigest()


def load_arrays(warm: WarmStart) -> dict[str, np.ndarray]:
    """All adapter arrays of a warm start (LoRA A and B, head), as PEFT names them."""
    from safetensors.numpy import load_file

    return load_file(str(warm.path / "adapter_model.safetensors"))


def apply_warm_start(classifier, cfg, *, log=print) -> WarmStart | None:
    """Load the warm start of `cfg` (if any) into `classifier`: every adapter array, frozen A included."""
    warm = ensure(cfg, log=log)
    if warm is None:
        return None
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    arrays = load_arrays(warm)
    current = get_peft_model_state_dict(classifier.model)
    renamed = {_match(name, current): value for name, value in arrays.items()}
    if set(renamed) != set(current) or any(tuple(v.shape) != tuple(current[k].shape) for k, v in renamed.items()):
        raise InputError(f"--warm-start {warm.path}: its arrays do not fit this model, LoRA settings and label set")
    set_peft_model_state_dict(classifier.model, {k: torch.as_tensor(v) for k, v in renamed.items()})
    return warm


def _match(saved: str, current: dict) -> str:
    """PEFT saves names without the adapter name ('default'); find the live name they belong to."""
    if saved in current:
        return saved
    for name in current:
        if name.replace(".default", "") == saved.replace(".default", ""):
            return name
    return saved
