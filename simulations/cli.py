"""`radfl`: train, federate, predict, synth, sweep, report, bench, pilot-certs and submit from one command line.

Bad input is an `InputError`: one line on stderr, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import MISSING

from common.config import RunConfig, config_fields
from common.errors import InputError

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Known, understood notices that would bury the output: Opacus' secure-RNG reminder (see README,
# "Privacy"), and torch's note that frozen inputs fire full backward hooks (the LoRA layers'
# inputs are frozen activations by design).
import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="Secure RNG turned off")
warnings.filterwarnings("ignore", message="Full backward hook is firing")


def _add_config_options(parser: argparse.ArgumentParser, *, federated: bool, defaults: dict | None = None) -> None:
    for f in config_fields(federated=federated):
        default = (defaults or {}).get(f.name, f.default)
        kind = type(f.default) if f.default is not MISSING else str
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=kind,
            default=default,
            choices=f.metadata["choices"],
            help=f"{f.metadata['help']} (default: {default}; run-config key {f.metadata['key']})",
        )


def _config(args: argparse.Namespace, *, federated: bool) -> RunConfig:
    return RunConfig.from_dict({f.name: getattr(args, f.name) for f in config_fields(federated=federated)})


def cmd_train(args) -> int:
    from simulations.centralized import run_centralized
    from simulations.results import summary_table

    record = run_centralized(_config(args, federated=False), show_progress=not args.quiet)
    print(summary_table(record))
    print(f"\nadapter: {os.path.join(args.out, 'adapter')}\nmetrics: {os.path.join(args.out, 'metrics.json')}")
    return 0


def cmd_federate(args) -> int:
    from simulations.federated import run_federated
    from simulations.results import summary_table

    record = run_federated(_config(args, federated=True), show_progress=not args.quiet, node_config=args.node_config)
    print(summary_table(record))
    print(f"\nglobal adapter: {os.path.join(args.out, 'adapter')}\nmetrics: {os.path.join(args.out, 'metrics.json')}")
    return 0


def cmd_baseline(args) -> int:
    """TF-IDF + logistic regression and its DP twin on the splits `radfl train` would use."""
    from common.baselines import run_baselines
    from common.data import prepare
    from common.model import load_tokenizer
    from common.outputs import write_json_atomic

    cfg = _config(args, federated=False)
    data = prepare(cfg, load_tokenizer(cfg.model))
    result = run_baselines(data, epsilon=cfg.epsilon, delta=cfg.delta, seed=cfg.seed, accountant=cfg.accountant)
    print(f"{cfg.dataset}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test reports")
    for name, entry in result.items():
        label = (
            "TF-IDF + logistic regression (no DP)"
            if name == "tfidf_logreg"
            else f"DP logistic regression (epsilon {entry['epsilon']})"
        )
        auroc = entry["metrics"].get("macro_auroc")
        print(
            f"{label:<48} weighted F1 {entry['metrics']['weighted_f1']:.4f}   macro AUROC {auroc if auroc is None else round(auroc, 4)}   "
            f"{entry['seconds']:.1f} s"
        )
    path = write_json_atomic(
        os.path.join(args.out, "baselines.json"), {"config": cfg.to_dict(), "baselines": result}, indent=2
    )
    print(f"\nwrote {path}")
    return 0


def cmd_warm_start(args) -> int:
    from common.warmstart import SYNTHETIC_CHOICES, ensure

    cfg = _config(args, federated=False)
    cfg = cfg.replace(warm_start=cfg.warm_start if cfg.warm_start in SYNTHETIC_CHOICES else "synthetic")
    warm = ensure(cfg)
    print(
        f"warm start for {cfg.dataset} labels, model {cfg.model}: {warm.path}\nsha256 {warm.sha256}\n{warm.record()['private_data']}"
    )
    return 0


def cmd_audit(args) -> int:
    from simulations.audit import audit_command

    return audit_command(args, _config(args, federated=True))


def cmd_predict(args) -> int:
    from simulations.predict import predict_command

    return predict_command(args)


def cmd_synth(args) -> int:
    from common.layouts import write_ct_rate, write_mimic_cxr
    from common.synthetic import HOSPITALS, generate

    hospitals = HOSPITALS
    if args.hospital:
        hospitals = tuple(h for h in HOSPITALS if h.name == args.hospital)
        if not hospitals:
            raise InputError(f"unknown hospital {args.hospital!r}; use one of {', '.join(h.name for h in HOSPITALS)}")
    if args.reports < 10:
        raise InputError("--reports must be at least 10")
    if os.path.exists(args.out) and os.listdir(args.out):
        raise InputError(f"{args.out} is not empty; choose a new folder (radfl synth never overwrites data)")
    kind = "mimic-cxr" if args.layout == "mimic-cxr" else "ct-rate"
    data = generate(
        kind,
        n_reports=args.reports,
        seed=args.seed,
        label_noise=args.label_noise,
        hospitals=hospitals,
        difficulty=args.difficulty,
    )
    writer = write_mimic_cxr if kind == "mimic-cxr" else write_ct_rate
    writer(data, args.out, seed=args.seed)
    print(f"wrote {args.reports} synthetic {kind} reports in the {args.layout} layout to {args.out}")
    return 0


def cmd_sweep(args) -> int:
    from simulations.sweep import sweep_command

    return sweep_command(args)


def cmd_report(args) -> int:
    from simulations.report import report_command

    return report_command(args)


def cmd_bench(args) -> int:
    from simulations.bench import bench_command

    return bench_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radfl", description="Federated, differentially private LoRA for radiology report labels."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="centralized DP-LoRA training (the paper's setting)")
    _add_config_options(train, federated=False)
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    federate = sub.add_parser("federate", help="federated DP-LoRA over simulated hospitals (Flower simulation engine)")
    _add_config_options(federate, federated=True, defaults={"out": "runs/federated"})
    federate.add_argument("--quiet", action="store_true", help="no progress output")
    federate.add_argument(
        "--node-config",
        default="",
        help='site policy of every simulated site ("max-epsilon=1 '
        'lifetime-epsilon=4 ..."), or per site ("0: max-epsilon=1; 1: require-dp=true"); default: what the run asks',
    )
    federate.set_defaults(func=cmd_federate)

    baseline = sub.add_parser(
        "baseline", help="TF-IDF + logistic regression and its DP twin on the splits of radfl train"
    )
    _add_config_options(baseline, federated=False, defaults={"out": "runs/baseline"})
    baseline.set_defaults(func=cmd_baseline)

    warm = sub.add_parser("warm-start", help="build (once) and show the public warm start of a label set and model")
    _add_config_options(warm, federated=False)
    warm.set_defaults(func=cmd_warm_start)

    from simulations.audit import add_audit_arguments

    audit = sub.add_parser(
        "audit", help="privacy audit with canaries: an empirical lower bound on epsilon (one training run)"
    )
    add_audit_arguments(audit, _add_config_options)
    audit.set_defaults(func=cmd_audit)

    predict = sub.add_parser("predict", help="per-label probabilities from a saved adapter")
    predict.add_argument("--adapter", required=True, help="adapter folder of a run (DIR/adapter)")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="one report")
    source.add_argument("--input", help="a .txt file (one report per line), or a .csv/.jsonl file with a text column")
    predict.add_argument("--text-column", default="text", help="text column of a csv/jsonl input (default: text)")
    predict.add_argument("--output", help="write a CSV of probabilities here instead of printing")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    predict.set_defaults(func=cmd_predict)

    synth = sub.add_parser("synth", help="write a synthetic data set in the MIMIC-CXR or CT-RATE file layout")
    synth.add_argument("--layout", choices=("mimic-cxr", "ct-rate"), default="mimic-cxr")
    synth.add_argument("--reports", type=int, default=1000)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--label-noise", type=float, default=0.03)
    synth.add_argument("--hospital", default="", help="only this hospital's style (default: all four)")
    synth.add_argument(
        "--difficulty",
        choices=("realistic", "easy"),
        default="realistic",
        help="as varied as real reports, or clean templates",
    )
    synth.add_argument("--out", required=True)
    synth.set_defaults(func=cmd_synth)

    from simulations.report import add_report_arguments
    from simulations.sweep import add_sweep_arguments

    sweep = sub.add_parser("sweep", help="grid of datasets x models x epsilons x modes x seeds; resumable")
    add_sweep_arguments(sweep)
    sweep.set_defaults(func=cmd_sweep)
    report = sub.add_parser("report", help="results.csv, report.md and plots of a sweep folder")
    add_report_arguments(report)
    report.set_defaults(func=cmd_report)

    from simulations.deploy import add_deploy_arguments  # pilot-certs, submit: one SuperNode per hospital

    add_deploy_arguments(sub)
    from simulations.site_tools import add_site_arguments

    add_site_arguments(sub)
    from simulations.bench import add_bench_arguments

    bench = sub.add_parser("bench", help="DP and federation overhead, bytes per round, inference throughput")
    add_bench_arguments(bench)
    bench.set_defaults(func=cmd_bench)
    return parser


def _terminate(signum, frame):
    from common.runtime import request_stop

    request_stop()  # seen by the loops even if this KeyboardInterrupt lands in a finalizer and is dropped
    raise KeyboardInterrupt  # run the cleanup (finally blocks) on SIGTERM as on Ctrl-C


def main(argv=None) -> int:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args, extra) if getattr(args, "passthrough", False) else args.func(args) or 0)
    except InputError as error:
        print(f"radfl: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        from simulations.flower import RunFailed

        if not isinstance(error, RunFailed):
            raise
        print(f"radfl: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("radfl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
