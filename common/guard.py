"""The per-sample gradient guard: Opacus' per-example gradients against plain autograd.

Silent corruption of LoRA updates has been reported for some peft/opacus version pairs. DP-SGD's
guarantee rests on clipping each example's own gradient, so radfl checks, for the model it is
about to train, that Opacus computes exactly that: on a padded batch of reports of different
lengths, every trainable parameter's per-sample gradient must equal the gradient of that example
alone. `choose_grad_sample_mode` runs the check and picks the fastest mode that passes it.
"""

from __future__ import annotations

import contextlib
import copy

import torch

from common.tokens import make_collate
from common.training import MultiLabelLoss

# Fastest first, as measured by `radfl bench` on 2 CPU cores with MiniLM (docs/benchmarks.md).
PREFERENCE = ("hooks", "functorch")
LENGTHS = (5, 9, 12, 7)


def per_sample_gradient_error(model: torch.nn.Module, mode: str, *, seed: int = 0, autocast_dtype=None) -> float:
    """Largest absolute difference between Opacus' per-sample gradients (`mode`, optionally under
    mixed-precision autocast) and float32 per-example autograd gradients, over every trainable
    parameter, relative to the largest reference gradient when `autocast_dtype` is given.
    Works on a copy: `model` is untouched."""
    from opacus.grad_sample import GradSampleHooks

    model = copy.deepcopy(model).float().train()
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # LoRA B starts at zero: make every gradient non-trivial
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    n_labels = model(
        input_ids=torch.ones(1, 2, dtype=torch.long, device=device),
        attention_mask=torch.ones(1, 2, dtype=torch.long, device=device),
    ).logits.shape[1]
    ids = [torch.randint(1000, 5000, (n,), generator=g) for n in LENGTHS]
    targets = torch.randint(0, 2, (len(LENGTHS), n_labels), generator=g).float()
    criterion = MultiLabelLoss()
    expected = {n: [] for n in trainable}
    for i, example in enumerate(ids):  # one unpadded example at a time
        model.zero_grad()
        logits = model(
            input_ids=example[None].to(device),
            attention_mask=torch.ones(1, len(example), dtype=torch.long, device=device),
        ).logits
        criterion(logits, targets[i : i + 1].to(device)).backward()
        for n, p in trainable.items():
            expected[n].append(p.grad.detach().clone())
    model.zero_grad()
    input_ids, mask, _ = make_collate(0)(list(zip(ids, targets, strict=True)))
    hooks = GradSampleHooks(model, batch_first=True, loss_reduction="mean", force_functorch=mode == "functorch")
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    try:
        with autocast:
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        criterion(logits.float(), targets.to(device)).backward()
        worst, scale = 0.0, 0.0
        for n, p in trainable.items():
            if p.grad_sample is None:
                return float("inf")
            reference = torch.stack(expected[n])
            worst = max(worst, float((p.grad_sample.float() - reference).abs().max()))
            scale = max(scale, float(reference.abs().max()))
        return worst / scale if autocast_dtype else worst
    finally:
        hooks.cleanup()


def choose_grad_sample_mode(model: torch.nn.Module, requested: str = "auto", *, tolerance: float = 1e-5) -> str:
    """`requested` if explicit, else the fastest mode whose per-sample gradients pass the guard."""
    if requested != "auto":
        return requested
    for mode in PREFERENCE:
        if per_sample_gradient_error(model, mode) <= tolerance:
            return mode
    raise RuntimeError("no Opacus per-sample gradient mode matches autograd for this model; refusing to train under DP")


def autocast_is_safe(model: torch.nn.Module, mode: str, dtype, *, tolerance: float = 0.05) -> bool:
    """Mixed precision only where Opacus stays correct: per-sample gradients under `dtype` autocast
    must match float32 autograd within `tolerance` of the largest gradient (bf16 keeps ~3 digits)."""
    return dtype is not None and per_sample_gradient_error(model, mode, autocast_dtype=dtype) <= tolerance
