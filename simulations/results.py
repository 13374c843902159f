"""The summary table the CLI prints from a run's metrics.json record."""

from __future__ import annotations


def summary_table(record: dict) -> str:
    """A short plain-text table: headline metrics, privacy, per-label F1."""
    m, p, t = record["metrics"], record["privacy"], record["timing"]
    eps = p["epsilon_target"]
    lines = [
        f"{'mode':<22}{record['mode']}",
        f"{'model':<22}{record['config']['model']}",
        f"{'data':<22}{record['config']['dataset']}: {record['data']['n_train']} train / {record['data']['n_val']} val / {record['data']['n_test']} test",
        f"{'epsilon target/spent':<22}{eps} / {_num(p['epsilon_spent'])}  " + (
            f"(delta {p['delta']:g}, sigma {p['noise_multiplier']:.3f}, q {p['sample_rate']:.4f}, {p['steps']} steps, {p['accountant']})"
            if p["accountant"] else "(no DP: the non-private baseline)"),
        f"{'optimizer':<22}{_optimizer(record)}",
        f"{'train time':<22}{t['train_seconds']:.1f} s ({t['examples_per_second']:.1f} examples/s)",
        "",
        f"{'weighted F1':<22}{m['weighted_f1']:.4f}",
        f"{'micro F1':<22}{m['micro_f1']:.4f}",
        f"{'macro F1':<22}{m['macro_f1']:.4f}",
        f"{'samples F1':<22}{m['samples_f1']:.4f}",
        "",
        f"{'label':<30}{'P':>7}{'R':>7}{'F1':>7}{'support':>9}",
    ]
    for name, row in m["per_label"].items():
        lines.append(f"{name:<30}{row['precision']:>7.3f}{row['recall']:>7.3f}{row['f1']:>7.3f}{row['support']:>9d}")
    return "\n".join(lines)


def _optimizer(record: dict) -> str:
    runtime = record.get("runtime", {})
    return f"{runtime['optimizer']} lr {runtime['lr']:g}" if "optimizer" in runtime else "-"


def _num(value) -> str:
    return value if isinstance(value, str) else f"{value:.4f}"
