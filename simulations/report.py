"""`radfl report DIR`: results.csv, report.md and plots from a sweep's cell records.

Numbers come from the cells' metrics.json files, never from memory of the sweep. Each table
cell is the mean over seeds with a 95% Student-t confidence interval. Comparisons (centralized
against federated at the same ε; each ε against non-private) use a paired bootstrap over test
reports, stratified by seed: both runs of a pair saw the same test reports, so resampling the
reports and recomputing both weighted F1s gives the spread of their difference.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from common.metrics import compute_metrics

# arXiv 2506.04450, centralized DP-LoRA, weighted F1 (moderate privacy / non-private).
PAPER = {"mimic-cxr": {"private": 0.88, "non_private": 0.90}, "ct-rate": {"private": 0.59, "non_private": 0.78}}
BOOTSTRAP = 2000
COLUMNS = [
    "cell",
    "dataset",
    "model",
    "mode",
    "seed",
    "status",
    "reason",
    "epsilon_target",
    "epsilon_spent",
    "delta",
    "noise_multiplier",
    "sample_rate",
    "steps",
    "weighted_f1",
    "micro_f1",
    "macro_f1",
    "macro_auroc",
    "tfidf_weighted_f1",
    "dp_baseline_weighted_f1",
    "warm_start_weighted_f1",
    "epsilon_lower_white_box",
    "epsilon_lower_black_box",
    "train_seconds",
    "total_seconds",
    "bytes_up_per_round",
    "bytes_down_per_round",
    "full_model_bytes",
]
MODES = ("centralized", "federated", "federated-distributed", "federated-client-dp")


def add_report_arguments(parser) -> None:
    parser.add_argument("dir", help="a sweep folder (with cells/)")


def report_command(args) -> int:
    from common.errors import InputError

    if not (Path(args.dir) / "cells").is_dir():
        raise InputError(f"{args.dir} has no cells/ folder; pass the --out folder of a sweep")
    for path in write_report(Path(args.dir)):
        print(path)
    return 0


def load_rows(folder: Path) -> list[dict]:
    rows = []
    for cell_dir in sorted((folder / "cells").iterdir()):
        if not cell_dir.is_dir():
            continue
        status = _read(cell_dir / "status.json") or {"status": "unfinished", "cell": _cell_from_name(cell_dir.name)}
        cell = status.get("cell") or _cell_from_name(cell_dir.name)
        row = {
            "cell": cell_dir.name,
            "dataset": cell["dataset"],
            "model": cell["model"],
            "mode": cell["mode"],
            "seed": cell["seed"],
            "status": status["status"],
            "reason": status.get("reason", ""),
            "epsilon_target": float(cell["epsilon"]),
            "path": cell_dir,
        }
        record = _read(cell_dir / "metrics.json") if status["status"] == "done" else None
        if record:
            p, m, fed = record["privacy"], record["metrics"], record.get("federation", {})
            fed = fed or {}
            baselines = record.get("baselines") or {}
            warm = record.get("warm_start") or {}
            row.update(
                {
                    "epsilon_spent": _num(p["epsilon_spent"]),
                    "delta": p["delta"],
                    "noise_multiplier": p["noise_multiplier"],
                    "sample_rate": p["sample_rate"],
                    "steps": p["steps"],
                    "weighted_f1": m["weighted_f1"],
                    "micro_f1": m["micro_f1"],
                    "macro_f1": m["macro_f1"],
                    "macro_auroc": m.get("macro_auroc"),
                    "train_seconds": record["timing"]["train_seconds"],
                    "total_seconds": record["timing"].get("total_seconds"),
                    "tfidf_weighted_f1": baselines.get("tfidf_logreg", {}).get("metrics", {}).get("weighted_f1"),
                    "dp_baseline_weighted_f1": baselines.get("dp_logreg", {}).get("metrics", {}).get("weighted_f1"),
                    "warm_start_weighted_f1": (warm.get("test_metrics") or {}).get("weighted_f1"),
                    "bytes_up_per_round": fed.get("bytes_up_per_round"),
                    "bytes_down_per_round": fed.get("bytes_down_per_round"),
                    "full_model_bytes": fed.get("full_model_bytes"),
                    "per_label": m.get("per_label", {}),
                }
            )
            audit = _read(cell_dir / "audit" / "audit.json")
            if audit:
                row.update(
                    {
                        "epsilon_lower_white_box": audit["white_box"]["epsilon_lower"],
                        "epsilon_lower_black_box": audit["black_box"]["epsilon_lower"],
                    }
                )
        rows.append(row)
    return rows


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _num(value):
    return math.inf if value == "inf" else value


def _cell_from_name(name: str) -> dict:
    dataset, model, mode, eps, seed = name.split("__")
    return {"dataset": dataset, "model": model, "mode": mode, "epsilon": float(eps[3:]), "seed": int(seed[4:])}


def mean_ci(values) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% Student-t interval (None with one value)."""
    from scipy import stats

    values = np.asarray([v for v in values if v is not None], dtype=float)
    if len(values) == 0:
        return math.nan, None
    if len(values) == 1:
        return float(values[0]), None
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean()), float(half)


def _predictions(row: dict):
    path = Path(row["path"]) / "predictions.npz"
    if not path.is_file():
        return None
    with np.load(path) as stored:
        cut = (
            stored["thresholds"] if "thresholds" in stored.files else np.full(stored["probs"].shape[1], 0.5, np.float32)
        )
        return stored["targets"], stored["probs"].astype(np.float32), cut


def paired_bootstrap(pairs, label_names, *, resamples: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """Mean weighted-F1 difference (a − b) over seeds and its two-sided bootstrap p-value.

    `pairs` holds (targets, predictions_a, predictions_b) per seed (0/1 at each run's own thresholds);
    reports are resampled within each seed.
    """
    rng = np.random.default_rng(seed)
    f1 = lambda t, p: compute_metrics(t, p, label_names)["weighted_f1"]  # noqa: E731
    observed = float(np.mean([f1(t, a) - f1(t, b) for t, a, b in pairs]))
    diffs = []
    for _ in range(resamples):
        d = []
        for t, a, b in pairs:
            idx = rng.integers(0, len(t), len(t))
            d.append(_fast_weighted_f1(t[idx], a[idx]) - _fast_weighted_f1(t[idx], b[idx]))
        diffs.append(np.mean(d))
    diffs = np.asarray(diffs)
    p = 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())
    return observed, float(min(1.0, max(p, 1.0 / resamples)))


def _fast_weighted_f1(targets: np.ndarray, probs: np.ndarray) -> float:
    """Weighted F1 as sklearn computes it, vectorized for the bootstrap (NaN targets ignored)."""
    known = ~np.isnan(targets)
    truth = np.where(known, targets, 0) > 0.5
    pred = (probs >= 0.5) & known
    tp = (truth & pred).sum(0)
    fp = (~truth & pred).sum(0)
    fn = (truth & ~pred).sum(0)
    support = truth.sum(0)
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(len(tp), float), where=(2 * tp + fp + fn) > 0)
    return float((f1 * support).sum() / support.sum()) if support.sum() else 0.0


def write_report(folder: Path) -> list[Path]:
    folder = Path(folder)
    rows = load_rows(folder)
    csv_path = folder / "results.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: ("inf" if isinstance(row.get(k), float) and math.isinf(row[k]) else row.get(k, ""))
                    for k in COLUMNS
                }
            )
    md_path = folder / "report.md"
    md_path.write_text(_markdown(rows))
    plots = _plots(rows, folder)
    return [csv_path, md_path, *plots]


def _eps_label(eps: float) -> str:
    return "non-private" if math.isinf(eps) else f"{eps:g}"


def _groups(rows):
    keys = sorted({(r["dataset"], r["model"]) for r in rows})
    for dataset, model in keys:
        yield dataset, model, [r for r in rows if r["dataset"] == dataset and r["model"] == model]


def _markdown(rows: list[dict]) -> str:
    lines = [
        "# radfl sweep report",
        "",
        "Weighted F1 (the paper's metric) on the held-out test reports: mean ± 95% CI (Student t) over seeds; "
        "Δ is the drop against the non-private run of the same mode. Tests: paired bootstrap over test reports "
        f"({BOOTSTRAP} resamples, stratified by seed), two-sided p-values.",
        "",
    ]
    problems = [r for r in rows if r["status"] != "done"]
    for dataset, model, group in _groups(rows):
        done = [r for r in group if r["status"] == "done"]
        modes = [m for m in MODES if any(r["mode"] == m for r in group)]
        epsilons = sorted({r["epsilon_target"] for r in group})
        lines += [f"## {dataset} · {model}", ""]
        stats = {}
        for mode in modes:
            for eps in epsilons:
                cell = [r for r in done if r["mode"] == mode and r["epsilon_target"] == eps]
                stats[mode, eps] = (
                    {k: mean_ci([r[k] for r in cell]) for k in ("weighted_f1", "micro_f1", "macro_f1")}
                    if cell
                    else None
                )
        header = "| ε | " + " | ".join(f"{m} weighted F1 | Δ vs non-private" for m in modes) + " |"
        lines += [header, "|" + "---|" * (1 + 2 * len(modes))]
        for eps in epsilons:
            cells = []
            for mode in modes:
                s, base = stats.get((mode, eps)), stats.get((mode, math.inf))
                if s is None:
                    status = next((r["status"] for r in group if r["mode"] == mode and r["epsilon_target"] == eps), "—")
                    cells += [status, ""]
                    continue
                cells += [
                    _fmt(*s["weighted_f1"]),
                    f"{s['weighted_f1'][0] - base['weighted_f1'][0]:+.3f}" if base and not math.isinf(eps) else "",
                ]
            lines.append(f"| {_eps_label(eps)} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Micro / macro F1:",
            "",
            "| ε | " + " | ".join(f"{m} micro | {m} macro" for m in modes) + " |",
            "|" + "---|" * (1 + 2 * len(modes)),
        ]
        for eps in epsilons:
            cells = []
            for mode in modes:
                s = stats.get((mode, eps))
                cells += [_fmt(*s["micro_f1"]), _fmt(*s["macro_f1"])] if s else ["", ""]
            lines.append(f"| {_eps_label(eps)} | " + " | ".join(cells) + " |")
        lines += ["", *_baselines(done, epsilons), ""]
        lines += ["", *_significance(done, modes, epsilons), ""]
        lines += _per_label(done, modes, epsilons)
        reference = PAPER.get(dataset)
        if reference:
            lines += [
                "",
                f"Paper (centralized DP-LoRA, same data set): weighted F1 {reference['private']} under moderate privacy, "
                f"{reference['non_private']} non-private.",
                "",
            ]
        else:
            lines += [
                "",
                "The paper's figures (weighted F1 0.88 / 0.90 on MIMIC-CXR, 0.59 / 0.78 on CT-RATE, moderate privacy / "
                "non-private) are for the real data sets and are not comparable with synthetic data.",
                "",
            ]
    if problems:
        lines += ["## Cells without a result", "", "| cell | status | reason |", "|---|---|---|"]
        lines += [f"| {r['cell']} | {r['status']} | {r['reason'] or ''} |" for r in problems]
    return "\n".join(lines) + "\n"


def _baselines(done, epsilons) -> list[str]:
    """The classic baselines and the zero-epsilon warm start beside the transformer, and the audit where it ran."""
    central = [r for r in done if r["mode"] == "centralized"]
    if not any(r.get("tfidf_weighted_f1") is not None or r.get("epsilon_lower_white_box") is not None for r in done):
        return []
    lines = [
        "Beside the transformer (centralized cells; weighted F1, and the audit's epsilon lower bound where it ran):",
        "",
        "| ε | radfl | TF-IDF + LR (no DP) | DP logistic regression | warm start alone (ε 0) | ε_lower white box (centr. / fed. / distr.) |",
        "|---|---|---|---|---|---|",
    ]
    for eps in epsilons:
        pick = [r for r in central if r["epsilon_target"] == eps]
        value = lambda key, pick=pick: _fmt(*mean_ci([r.get(key) for r in pick])) if pick else ""  # noqa: E731
        lower = " / ".join(
            _fmt(
                *mean_ci(
                    [r.get("epsilon_lower_white_box") for r in done if r["mode"] == mode and r["epsilon_target"] == eps]
                )
            )
            or "—"
            for mode in ("centralized", "federated", "federated-distributed")
        )
        lines.append(
            f"| {_eps_label(eps)} | {value('weighted_f1')} | {value('tfidf_weighted_f1')} | "
            f"{value('dp_baseline_weighted_f1') if not math.isinf(eps) else '—'} | {value('warm_start_weighted_f1') or '—'} | {lower} |"
        )
    return lines


def _fmt(mean: float, half: float | None) -> str:
    if mean is None or math.isnan(mean):
        return ""
    return f"{mean:.3f}" if half is None else f"{mean:.3f} ± {half:.3f}"


def _pairs(done, a, b):
    """(targets, probs_a, probs_b) per seed where both cells have predictions."""
    label_names, pairs = None, []
    for ra in a:
        rb = next((r for r in b if r["seed"] == ra["seed"]), None)
        pa, pb = _predictions(ra), _predictions(rb) if rb else None
        if pa is not None and pb is not None and pa[0].shape == pb[0].shape:
            # 0/1 predictions at each run's own thresholds: the bootstrap then compares what each run reported
            pairs.append((pa[0], (pa[1] >= pa[2]).astype(np.float32), (pb[1] >= pb[2]).astype(np.float32)))
            label_names = list(ra["per_label"])
    return pairs, label_names


def _significance(done, modes, epsilons) -> list[str]:
    lines = ["Paired bootstrap tests (difference in weighted F1, p-value):", ""]
    found = False
    pick = lambda mode, eps: [r for r in done if r["mode"] == mode and r["epsilon_target"] == eps]  # noqa: E731
    if "centralized" in modes:
        for mode in (m for m in modes if m != "centralized"):
            for eps in epsilons:
                pairs, names = _pairs(done, pick("centralized", eps), pick(mode, eps))
                if pairs:
                    diff, p = paired_bootstrap(pairs, names)
                    lines.append(f"- ε = {_eps_label(eps)}: centralized − {mode} = {diff:+.3f}, p = {p:.3g}")
                    found = True
    for mode in modes:
        for eps in (e for e in epsilons if not math.isinf(e)):
            pairs, names = _pairs(done, pick(mode, eps), pick(mode, math.inf))
            if pairs:
                diff, p = paired_bootstrap(pairs, names)
                lines.append(f"- {mode}: ε = {_eps_label(eps)} − non-private = {diff:+.3f}, p = {p:.3g}")
                found = True
    return lines if found else ["(no paired comparisons: predictions missing)"]


def headline_epsilon(epsilons) -> float | None:
    finite = [e for e in epsilons if not math.isinf(e)]
    return 1.0 if 1.0 in finite else (max(finite) if finite else None)


def _per_label(done, modes, epsilons) -> list[str]:
    eps = headline_epsilon(epsilons)
    if eps is None:
        return []
    labels = next((list(r["per_label"]) for r in done if r["per_label"]), [])
    if not labels:
        return []
    lines = [
        f"Per-label F1 at ε = {eps:g} (mean over seeds):",
        "",
        "| label | " + " | ".join(modes) + " |",
        "|" + "---|" * (1 + len(modes)),
    ]
    for label in labels:
        values = []
        for mode in modes:
            cell = [
                r["per_label"][label]["f1"]
                for r in done
                if r["mode"] == mode and r["epsilon_target"] == eps and label in r["per_label"]
            ]
            values.append(f"{np.mean(cell):.3f}" if cell else "")
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return lines


def _plots(rows: list[dict], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "done"]
    groups = list(_groups(done))
    if not groups:
        return []
    colors = {
        "centralized": "tab:blue",
        "federated": "tab:orange",
        "federated-distributed": "tab:red",
        "federated-client-dp": "tab:green",
    }
    dashes = {
        "centralized": (6, 3),
        "federated": (2, 2),
        "federated-distributed": (1, 1),
        "federated-client-dp": (4, 1, 1, 1),
    }
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 5.2), squeeze=False)
    for ax, (dataset, model, group) in zip(axes[0], groups, strict=True):
        finite = sorted({r["epsilon_target"] for r in group if not math.isinf(r["epsilon_target"])})
        for mode in colors:
            points = [
                (e, *mean_ci([r["weighted_f1"] for r in group if r["mode"] == mode and r["epsilon_target"] == e]))
                for e in finite
            ]
            points = [p for p in points if not math.isnan(p[1])]
            if points:
                ax.errorbar(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    yerr=[p[2] or 0 for p in points],
                    marker="o",
                    capsize=3,
                    color=colors[mode],
                    label=f"{mode} (DP)",
                )
            base = mean_ci([r["weighted_f1"] for r in group if r["mode"] == mode and math.isinf(r["epsilon_target"])])[
                0
            ]
            if not math.isnan(base):
                ax.axhline(
                    base, linestyle=(0, dashes[mode]), color=colors[mode], alpha=0.8, label=f"{mode} non-private"
                )
        ax.set_xscale("log")
        ax.set_xlabel("privacy budget ε (log scale)")
        ax.set_ylabel("weighted F1 (test)")
        ax.set_ylim(0, 1)
        ax.set_title(f"{dataset} · {model}")
        ax.grid(alpha=0.3)
        ax.legend(
            fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False
        )  # below: never over a point
    fig.tight_layout()
    utility = folder / "privacy_utility.png"
    fig.savefig(utility, dpi=120)
    plt.close(fig)

    panels = [(d, m, mode, g) for d, m, g in groups for mode in colors if any(r["mode"] == mode for r in g)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 2, 6), squeeze=False)
    for ax, (dataset, model, mode, group) in zip(axes[0], panels, strict=True):
        epsilons = sorted({r["epsilon_target"] for r in group if r["mode"] == mode})
        labels = next((list(r["per_label"]) for r in group if r["per_label"]), [])
        if not labels:
            continue
        grid = np.array(
            [
                [
                    np.mean(
                        [r["per_label"][lab]["f1"] for r in group if r["mode"] == mode and r["epsilon_target"] == e]
                        or [np.nan]
                    )
                    for e in epsilons
                ]
                for lab in labels
            ]
        )
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(epsilons)), [_eps_label(e) for e in epsilons], rotation=45)
        ax.set_yticks(range(len(labels)), labels if ax is axes[0][0] else [""] * len(labels), fontsize=8)
        ax.set_xlabel("ε")
        ax.set_title(f"{mode}\n{dataset} · {model}", fontsize=9)
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if not np.isnan(grid[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{grid[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if grid[i, j] < 0.6 else "black",
                    )
    fig.colorbar(image, ax=axes[0].tolist(), label="F1", shrink=0.8)
    heatmap = folder / "per_label_f1.png"
    fig.savefig(heatmap, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return [utility, heatmap]
