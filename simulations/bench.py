"""`radfl bench`: DP overhead, federation overhead, bytes per round and inference throughput.

Everything is measured in one process, on the same batches, and printed with what the numbers
depend on (model, sequence lengths, batch size, threads, device, versions). Speed targets live
here, never in timed tests.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from common.adapters import full_model_bytes, get_adapter_state, state_bytes
from common.config import RunConfig
from common.data import load_reports, prepare
from common.errors import InputError
from common.model import LoraSpec, build_classifier, load_tokenizer, resolve_device
from common.outputs import versions
from common.runtime import autocast_dtype, configure_threads
from common.tokens import make_collate
from common.training import MultiLabelLoss, train_step

TARGETS = {"dp_over_non_private": 0.85, "federated_over_centralized": 1.3, "bytes_fraction": 0.01}


def add_bench_arguments(parser) -> None:
    parser.add_argument("--model", default="minilm", help="preset, HF id or folder (default: minilm)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=64, help="batch for the step benchmarks")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per mode (after one warm-up step)")
    parser.add_argument("--modes", default="hooks,functorch,ghost", help="per-sample gradient modes to time")
    parser.add_argument(
        "--quick", action="store_true", help="fewer steps; federation comparison on 3000 reports, 3000 examples"
    )
    parser.add_argument(
        "--skip-federation", action="store_true", help="leave out the centralized vs distributed-DP wall-time run"
    )
    parser.add_argument("--out", required=True, help="FILE.json for the results")


def _batches(data, batch_size: int, count: int, pad_id: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    dataset = data.dataset(data.train)
    collate = make_collate(pad_id)
    return [
        collate([dataset[int(i)] for i in rng.choice(len(dataset), batch_size, replace=False)]) for _ in range(count)
    ]


def step_throughput(model_name: str, data, *, batch_size: int, steps: int, modes, device) -> dict:
    """Examples per second of one training step: non-private, then each DP per-sample-gradient mode."""
    from opacus import PrivacyEngine

    amp = autocast_dtype(device)
    results = {}
    batches = None
    for mode in ["non-private", *modes]:
        clf = build_classifier(model_name, data.label_names, device=device)
        batches = batches or _batches(data, batch_size, steps + 2, clf.pad_id)
        params = [p for p in clf.model.parameters() if p.requires_grad]
        optimizer, criterion, hooks = torch.optim.Adam(params, lr=1e-3), MultiLabelLoss(), None
        clf.model.train()
        if mode != "non-private":
            loader = DataLoader(data.dataset(data.train), batch_size=batch_size, collate_fn=make_collate(clf.pad_id))
            wrapped = PrivacyEngine(accountant="prv").make_private(
                module=clf.model,
                optimizer=optimizer,
                data_loader=loader,
                criterion=MultiLabelLoss(),
                noise_multiplier=1.0,
                max_grad_norm=0.1,
                grad_sample_mode=mode,
                wrap_model=False,
                poisson_sampling=False,
            )
            hooks, optimizer, criterion = (
                (wrapped[0], wrapped[1], wrapped[2]) if mode == "ghost" else (wrapped[0], wrapped[1], criterion)
            )
        micro = 0 if mode == "ghost" else 16
        try:
            for batch in batches[:2]:  # warm-up: first-call costs (kernels, hook set-up) are not throughput
                train_step(clf.model, batch, optimizer, criterion, device, micro_batch=micro, autocast_dtype=amp)
            timings = []
            for _ in range(2):  # best of two passes over the same batches: a shared machine is noisy
                if device.type == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
                for batch in batches[2:]:
                    train_step(clf.model, batch, optimizer, criterion, device, micro_batch=micro, autocast_dtype=amp)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                timings.append(time.perf_counter() - started)
            seconds = min(timings)
            results[mode] = {"examples_per_second": steps * batch_size / seconds, "seconds": seconds}
        except Exception as error:  # noqa: BLE001 - a mode that fails is reported, not fatal
            results[mode] = {"error": f"{type(error).__name__}: {str(error)[:200]}"}
        finally:
            if hooks is not None:
                hooks.cleanup()
    base = results["non-private"].get("examples_per_second")
    for mode in modes:
        if "examples_per_second" in results[mode] and base:
            results[mode]["ratio_to_non_private"] = results[mode]["examples_per_second"] / base
    return results


def communication(model_name: str, labels) -> dict:
    lora = build_classifier(model_name, labels).model
    ffa = build_classifier(model_name, labels, lora=LoraSpec(frozen_a=True)).model
    full = full_model_bytes(lora)
    lora_bytes, ffa_bytes = state_bytes(get_adapter_state(lora)), state_bytes(get_adapter_state(ffa))
    return {
        "full_model_bytes": full,
        "lora_bytes_per_round": lora_bytes,
        "ffa_bytes_per_round": ffa_bytes,
        "lora_fraction_of_model": lora_bytes / full,
        "ffa_fraction_of_model": ffa_bytes / full,
        "ffa_over_lora": ffa_bytes / lora_bytes,
    }


def inference_throughput(model_name: str, data, device, count: int = 512) -> dict:
    from simulations.predict import predict_texts

    clf = build_classifier(model_name, data.label_names, device=device)
    texts = [data.reports.texts[i] for i in data.test[:count]]
    predict_texts(clf, texts[:32], max_length=128, device=device)  # warm-up
    started = time.perf_counter()
    predict_texts(clf, texts, max_length=128, device=device, batch_size=64)
    seconds = time.perf_counter() - started
    return {"reports": len(texts), "reports_per_second": len(texts) / seconds, "batch_size": 64}


def federation_overhead(model_name: str, *, reports: int, device: str, folder: Path, max_examples: int = 0) -> dict:
    """Wall time of `radfl train` against `radfl federate` with distributed DP (3 sites, SecAgg+) at the same ε,
    on the same reports and recipe, with the federation's per-round cost of each stage."""
    from simulations.centralized import run_centralized
    from simulations.federated import run_federated

    base = RunConfig(
        model=model_name, synthetic_reports=reports, sites=3, device=device, epsilon=1.0, max_examples=max_examples
    )
    started = time.perf_counter()
    central = run_centralized(base.replace(out=str(folder / "centralized")), show_progress=False)
    central_wall = time.perf_counter() - started
    started = time.perf_counter()
    federated = run_federated(
        base.replace(out=str(folder / "distributed"), dp_level="distributed"), show_progress=False
    )
    federated_wall = time.perf_counter() - started
    rounds = max(federated["federation"]["rounds_done"], 1)
    stages = {
        name: {"calls": v["calls"], "seconds_per_round": v["seconds"] / rounds}
        for name, v in federated["timing"].get("stages", {}).items()
    }
    return {
        "reports": reports,
        "epsilon": 1.0,
        "sites": 3,
        "rounds": federated["federation"]["rounds"],
        "rounds_done": rounds,
        "centralized_wall_seconds": central_wall,
        "federated_wall_seconds": federated_wall,
        "federated_over_centralized": federated_wall / central_wall,
        "centralized_weighted_f1": central["metrics"]["weighted_f1"],
        "federated_weighted_f1": federated["metrics"]["weighted_f1"],
        "centralized_train_seconds": central["timing"]["train_seconds"],
        "stages_per_round": stages,
    }


def bench_command(args) -> int:
    threads = configure_threads()
    device = resolve_device(args.device)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if any(m not in ("hooks", "functorch", "ghost") for m in modes):
        raise InputError("--modes takes hooks, functorch and ghost")
    steps = 3 if args.quick else args.steps
    cfg = RunConfig(model=args.model, synthetic_reports=1200)
    data = prepare(cfg, load_tokenizer(args.model), load_reports(cfg))
    lengths = np.array([len(data.ids[i]) for i in data.train])
    out = Path(args.out)
    result = {
        "setup": {
            "model": args.model,
            "device": str(device),
            "threads": threads,
            "batch_size": args.batch_size,
            "steps": steps,
            "sequence_tokens": {
                "mean": float(lengths.mean()),
                "p50": float(np.median(lengths)),
                "p90": float(np.percentile(lengths, 90)),
                "max": int(lengths.max()),
            },
            "autocast": str(autocast_dtype(device)),
            "versions": versions(),
            "targets": TARGETS,
        },
        "dp_overhead": step_throughput(
            args.model, data, batch_size=args.batch_size, steps=steps, modes=modes, device=device
        ),
        "communication": communication(args.model, data.label_names),
        "inference": inference_throughput(args.model, data, device),
    }
    if not args.skip_federation:
        result["federation"] = federation_overhead(
            args.model,
            reports=3000 if args.quick else RunConfig().synthetic_reports,
            device=args.device,
            folder=out.parent / f"{out.stem}-runs",
            max_examples=3000 if args.quick else 0,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(bench_table(result))
    print(f"\nresults: {out}")
    return 0


def bench_table(result: dict) -> str:
    s = result["setup"]
    lines = [
        f"model {s['model']} on {s['device']} ({s['threads']} threads), batch {s['batch_size']}, "
        f"tokens per report mean {s['sequence_tokens']['mean']:.0f} / p90 {s['sequence_tokens']['p90']:.0f} / max "
        f"{s['sequence_tokens']['max']}, autocast {s['autocast']}",
        "",
        f"{'training step':<28}{'examples/s':>12}{'DP / non-private':>18}",
    ]
    for mode, row in result["dp_overhead"].items():
        if "error" in row:
            lines.append(f"{mode:<28}{'failed: ' + row['error']}")
        else:
            ratio = row.get("ratio_to_non_private")
            lines.append(f"{mode:<28}{row['examples_per_second']:>12.1f}{'' if ratio is None else f'{ratio:>18.2f}'}")
    c = result["communication"]
    lines += [
        "",
        f"bytes per site per round: LoRA {c['lora_bytes_per_round']:,} ({100 * c['lora_fraction_of_model']:.2f}% of the "
        f"{c['full_model_bytes']:,}-byte model), FFA-LoRA {c['ffa_bytes_per_round']:,} ({c['ffa_over_lora']:.2f} x LoRA)",
        f"inference: {result['inference']['reports_per_second']:.1f} reports/s (batch {result['inference']['batch_size']})",
    ]
    if "federation" in result:
        f = result["federation"]
        lines.append(
            f"distributed DP (3 sites, SecAgg+) at epsilon 1: {f['federated_wall_seconds']:.0f} s vs {f['centralized_wall_seconds']:.0f} s "
            f"for radfl train = {f['federated_over_centralized']:.2f} x (weighted F1 {f['federated_weighted_f1']:.3f} vs "
            f"{f['centralized_weighted_f1']:.3f}); {f['rounds_done']} rounds, per round:"
        )
        for name, stage in sorted(f["stages_per_round"].items(), key=lambda kv: -kv[1]["seconds_per_round"]):
            lines.append(f"  {name:<34}{stage['seconds_per_round']:>8.2f} s  ({stage['calls']} calls)")
    return "\n".join(lines)
