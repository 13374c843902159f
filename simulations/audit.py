"""`radfl audit`: one training run with canaries, and the ε lower bound an attacker's success proves.

The run is radfl's own training path (`train_local`, the recipe, the ledger's σ) with m gradient canaries
(white box) and m report canaries (black box) added, each in training with probability 1/2:
- centralized: the optimizer's view (every step's released noisy gradient) and the final adapter;
- federated: one site with local DP over the run's rounds, the server's view (that site's update each
  round) and the final adapter;
- distributed: the sites' noise shares summed each round, the server's view of the sum.
See common/audit.py for the bound (Steinke, Nasr & Jagielski 2023).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from common.audit import GradientCanaries, draw_inclusion, guess_and_bound
from common.config import RunConfig
from common.data import prepare
from common.model import build_classifier, load_tokenizer, lora_spec, resolve_device
from common.outputs import write_json_atomic
from common.privacy import PrivacyLedger, epsilon_spent
from common.recipe import recipe_for
from common.runtime import configure_threads
from common.tokens import TokenizedReports
from common.training import MultiLabelLoss, predict_probs, private_gradient_sum, train_local
from common.warmstart import apply_warm_start

MODES = ("centralized", "federated", "distributed")


def report_canaries(m: int, n_labels: int, rng: np.random.Generator, *, vocab: tuple[int, int] = (2000, 29000)):
    """m reports of 16-32 random word pieces (rare together: no real report looks like them) with random labels."""
    ids = [
        np.concatenate([[101], rng.integers(*vocab, size=int(rng.integers(16, 33))), [102]]).astype(np.int32)
        for _ in range(m)
    ]
    labels = (rng.random((m, n_labels)) < 0.5).astype(np.float32)
    return ids, labels


def run_audit(
    cfg: RunConfig,
    *,
    mode: str = "centralized",
    m: int = 1000,
    k: int = 0,
    confidence: float = 0.95,
    break_mechanism: str = "",
    log=print,
) -> dict:
    """Audit one run; writes audit.json and audit.png to cfg.out and returns the record.

    `break_mechanism="no-noise"` (tests and demonstrations only) trains without noise while claiming cfg.epsilon.
    """
    if mode not in MODES:
        raise ValueError(f"unknown audit mode {mode!r}")
    started = time.perf_counter()
    configure_threads()
    device = resolve_device(cfg.device)
    rng = np.random.default_rng()  # inclusion, coordinates and report canaries: unknown to the mechanism
    data = prepare(cfg, load_tokenizer(cfg.model))
    k = k or max(1, m // 10)
    classifier = build_classifier(
        cfg.model, data.label_names, lora=lora_spec(cfg, federated=mode != "centralized"), device=device
    )
    apply_warm_start(classifier, cfg, log=log)
    reports = data.dataset(data.train)
    if mode == "federated":  # the audited site: one third of the pool, as in a 3-site federation
        share = data.site_splits(cfg.replace(sites=3))[0][0]
        reports = data.dataset(share)
    in_reports, in_grads = draw_inclusion(m, rng), draw_inclusion(m, rng)
    canary_ids, canary_labels = report_canaries(m, len(data.label_names), rng)
    train_ids = list(reports.ids) + [canary_ids[i] for i in np.flatnonzero(in_reports)]
    train_labels = np.concatenate([reports.labels.numpy(), canary_labels[in_reports]])
    train = TokenizedReports(train_ids, train_labels)
    recipe = recipe_for(cfg, len(train))
    clip = recipe.max_grad_norm or 0.1
    per_epoch = round(1 / recipe.sample_rate)
    sigma = recipe.noise_multiplier if cfg.private and break_mechanism != "no-noise" else 0.0
    rounds = cfg.rounds if mode != "centralized" else 1
    steps = recipe.steps if mode != "distributed" else recipe.steps
    ledger = PrivacyLedger(
        cfg.epsilon if cfg.private else 1e9, cfg.delta, cfg.accountant, clip, sigma, 1 / per_epoch, steps
    )
    canaries = GradientCanaries(classifier.model, m, included=in_grads, sample_rate=1 / per_epoch, clip=clip, rng=rng)
    log(
        f"audit ({mode}): {m} gradient and {m} report canaries, {int(in_grads.sum())} and {int(in_reports.sum())} included; "
        f"{steps} steps at sigma {sigma:.3f}, q {1 / per_epoch:.4f}"
        + (" -- MECHANISM BROKEN ON PURPOSE" if break_mechanism else "")
    )
    run_kwargs = dict(
        ledger=ledger,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        head_lr=recipe.head_lr,
        optimizer=recipe.optimizer,
        pad_id=classifier.pad_id,
        device=device,
        seed=cfg.seed,
        on_noise=canaries.add,
    )
    if mode == "distributed":
        _distributed(
            classifier,
            train,
            data,
            cfg,
            canaries,
            sigma=sigma,
            q=1 / per_epoch,
            clip=clip,
            steps=steps,
            recipe=recipe,
            device=device,
        )
    elif mode == "federated":
        per_round = max(1, math.ceil(steps / rounds))
        for _ in range(rounds):
            before = [p.detach().clone().numpy() for p in canaries.params]
            train_local(classifier.model, train, steps=per_round, **run_kwargs)
            canaries.observe_delta(before, [p.detach().numpy() for p in canaries.params])
    else:
        train_local(classifier.model, train, steps=steps, on_step=lambda optimizer: canaries.observe(), **run_kwargs)
    white, white_curve = guess_and_bound(canaries.scores, in_grads, k=k, delta=cfg.delta, confidence=confidence)
    probs = predict_probs(
        classifier.model, TokenizedReports(canary_ids, canary_labels), pad_id=classifier.pad_id, device=device
    )
    logits = torch.logit(torch.as_tensor(probs, dtype=torch.float64).clamp(1e-7, 1 - 1e-7))
    losses = MultiLabelLoss(reduction="none")(logits, torch.as_tensor(canary_labels, dtype=torch.float64)).numpy()
    black, black_curve = guess_and_bound(-losses, in_reports, k=k, delta=cfg.delta, confidence=confidence)
    claimed = epsilon_spent([(sigma, 1 / per_epoch, steps)], delta=cfg.delta) if cfg.private and sigma > 0 else math.inf
    record = {
        "mode": mode,
        "m": m,
        "k": k,
        "confidence": confidence,
        "epsilon_claimed": cfg.epsilon if cfg.private else "inf",
        "epsilon_accounted": claimed if math.isfinite(claimed) else "inf",
        "delta": cfg.delta,
        "noise_multiplier": sigma,
        "sample_rate": 1 / per_epoch,
        "steps": steps,
        "rounds": rounds,
        "broken_mechanism": break_mechanism or None,
        "white_box": {**white.to_dict(), "view": _view(mode), "curve": white_curve},
        "black_box": {
            **black.to_dict(),
            "view": "the final adapter's loss on each canary report",
            "curve": black_curve,
        },
        "seconds": time.perf_counter() - started,
        "config": cfg.to_dict(),
    }
    out = Path(cfg.out)
    write_json_atomic(out / "audit.json", record, indent=1)
    _plot(record, out / "audit.png")
    return record


def _view(mode: str) -> str:
    return {
        "centralized": "every step's released noisy gradient (the optimizer's view)",
        "federated": "the audited site's update each round (the server's view)",
        "distributed": "the sum of the sites' noise shares each round (the server's view under SecAgg+)",
    }[mode]


def _distributed(classifier, train, data, cfg, canaries, *, sigma, q, clip, steps, recipe, device):
    """The server's view under SecAgg+: Σ shares per round; the canaries sit at the first of 3 sites."""
    from common.recipe import optimizer_for
    from common.training import make_optimizer

    model = classifier.model
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    names = sorted(params)
    others = [data.dataset(part[0]) for part in data.site_splits(cfg.replace(sites=3))[1:]]
    name, lr, head_lr = optimizer_for(private=True, optimizer=cfg.optimizer, lr=cfg.lr)
    optimizer = make_optimizer(name, model, lr, head_lr)
    n_sites = 1 + len(others)
    for _ in range(steps):
        total = private_gradient_sum(
            model,
            train,
            noise_multiplier=sigma,
            noise_share=n_sites,
            sample_rate=q,
            max_grad_norm=clip,
            pad_id=classifier.pad_id,
            device=device,
            on_noise=canaries.add,
        )
        for site in others:
            share = private_gradient_sum(
                model,
                site,
                noise_multiplier=sigma,
                noise_share=n_sites,
                sample_rate=q,
                max_grad_norm=clip,
                pad_id=classifier.pad_id,
                device=device,
            )
            total = {n: total[n] + share[n] for n in names}
        expected = q * (len(train) + sum(len(s) for s in others))
        for i, (j, kk) in enumerate(canaries.where):
            canaries.scores[i] += canaries.sign[i] * float(total[names[j]].reshape(-1)[kk])
        optimizer.zero_grad(set_to_none=True)
        for n in names:
            params[n].grad = torch.as_tensor(total[n] / expected, dtype=params[n].dtype)
        optimizer.step()


def _plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, style in (("white_box", "-o"), ("black_box", "-s")):
        curve = record[key]["curve"]
        ax.plot(
            [c[0] for c in curve],
            [c[1] for c in curve],
            style,
            ms=3,
            label=f"{key.replace('_', '-')}: epsilon_lower {record[key]['epsilon_lower']:.2f}",
        )
    for eps in (0.5, 1, 2, 4, 8):
        ax.axhline(1 / (1 + math.exp(-eps)), color="grey", lw=0.6, ls=":")
        ax.text(
            ax.get_xlim()[1] if ax.get_xlim()[1] > 1 else 1,
            1 / (1 + math.exp(-eps)),
            f" eps={eps}",
            va="center",
            fontsize=7,
        )
    ax.set_xlabel("guesses (top and bottom scores)")
    ax.set_ylabel("precision of the guesses")
    ax.set_title(
        f"audit ({record['mode']}), claimed epsilon {record['epsilon_claimed']}, m = {record['m']}", fontsize=9
    )
    ax.set_ylim(0.4, 1.02)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_audit_arguments(parser, add_config_options) -> None:
    add_config_options(parser, federated=True, defaults={"out": "runs/audit"})
    parser.add_argument("--mode", choices=MODES, default="centralized", help="whose view the white-box auditor takes")
    parser.add_argument("--canaries", type=int, default=1000, help="m: canaries of each kind (default: 1000)")
    parser.add_argument("--guesses", type=int, default=0, help="k: guesses on each side (default: m / 10)")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument(
        "--break-mechanism",
        choices=("no-noise",),
        default="",
        help="demonstration only: train without noise while claiming --epsilon, to show the audit catches it",
    )


def audit_command(args, cfg: RunConfig) -> int:
    record = run_audit(
        cfg,
        mode=args.mode,
        m=args.canaries,
        k=args.guesses,
        confidence=args.confidence,
        break_mechanism=args.break_mechanism,
    )
    for key in ("white_box", "black_box"):
        r = record[key]
        print(
            f"{key.replace('_', '-'):<10} {r['correct']}/{r['guesses']} guesses right -> epsilon_lower {r['epsilon_lower']:.3f} "
            f"at {r['confidence']:.0%} (at most {r['max_certifiable']:.2f} certifiable with these guesses); view: {r['view']}"
        )
    print(
        f"claimed epsilon {record['epsilon_claimed']} (accounted {record['epsilon_accounted']}); {record['seconds']:.0f} s\n"
        f"wrote {Path(cfg.out) / 'audit.json'} and audit.png"
    )
    print(json.dumps({"epsilon_lower_white_box": record["white_box"]["epsilon_lower"]}))
    return 0
