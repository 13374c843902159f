"""The summary table the CLI prints from a run's metrics.json record."""

from __future__ import annotations


def summary_table(record: dict) -> str:
    """A short plain-text table: headline metrics beside the baselines, privacy, the recipe, per-label F1."""
    m, p, t, data = record["metrics"], record["privacy"], record["timing"], record["data"]
    lines = [
        f"{'mode':<22}{record['mode']}",
        f"{'model':<22}{record['config']['model']}",
        f"{'data':<22}{record['config']['dataset']}: {_count(data.get('n_train'))} train / {_count(data.get('n_val'))} val / "
        f"{_count(data.get('n_test'))} test",
        f"{'epsilon target/spent':<22}{p['epsilon_target']} / {_num(p['epsilon_spent'])}  "
        + (
            f"(delta {p['delta']:g}, sigma {_num(p['noise_multiplier'], 3)}, q {_num(p['sample_rate'], 4)}, {p['steps']} steps, "
            f"{p['accountant']}; unit: {p['unit']})"
            if p["accountant"]
            else "(no DP: the non-private baseline)"
        ),
    ]
    if "reason" in record["recipe"]:
        lines.append(f"{'recipe':<22}{record['recipe']['reason']}")
    if record.get("warm_start"):
        w = record["warm_start"]
        lines.append(f"{'warm start':<22}{w['kind']} {w['sha256'][:12]} ({w['private_data']})")
    lines += [
        f"{'thresholds':<22}{record['thresholds']['rule']}",
        f"{'train time':<22}{t['train_seconds']:.1f} s"
        + (f" ({t['examples_per_second']:.1f} examples/s)" if "examples_per_second" in t else ""),
        f"{'evaluation':<22}{record['evaluation']}",
        "",
    ]
    if m is None:
        return "\n".join(lines + ["no metrics: nothing was evaluated"])
    lines.append(f"{'':<38}{'weighted F1':>12}{'macro AUROC':>13}")
    lines.append(_row(f"radfl ({record['mode']})", m))
    if record.get("warm_start") and record["warm_start"].get("test_metrics"):
        lines.append(_row("warm start alone (epsilon 0)", record["warm_start"]["test_metrics"]))
    for name, entry in (record.get("baselines") or {}).items():
        label = (
            "TF-IDF + logistic regression"
            if name == "tfidf_logreg"
            else f"DP logistic regression (epsilon {entry.get('epsilon')})"
        )
        lines.append(_row(label, entry["metrics"]))
    lines += [
        "",
        f"{'micro F1':<22}{m['micro_f1']:.4f}",
        f"{'macro F1':<22}{m['macro_f1']:.4f}",
        "",
        f"{'label':<30}{'P':>7}{'R':>7}{'F1':>7}{'support':>9}",
    ]
    for name, row in m.get("per_label", {}).items():
        lines.append(f"{name:<30}{row['precision']:>7.3f}{row['recall']:>7.3f}{row['f1']:>7.3f}{row['support']:>9d}")
    return "\n".join(lines)


def _row(label: str, metrics: dict) -> str:
    auroc = metrics.get("macro_auroc")
    return f"{label:<38}{metrics['weighted_f1']:>12.4f}{'' if auroc is None else f'{auroc:>13.4f}'}"


def _count(value) -> str:
    return "?" if value is None else str(value)


def _num(value, digits: int = 4) -> str:
    return value if isinstance(value, str) else "-" if value is None else f"{value:.{digits}f}"
