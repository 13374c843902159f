"""`radfl sweep`: a resumable grid of datasets × models × modes × ε × seeds.

Each cell runs the same code as `radfl train` or `radfl federate` and writes its own record under
DIR/cells/<cell>/ (metrics.json, cell.log, test predictions). A cell is done when its metrics.json
exists; an infeasible ε is recorded as such (status.json) and never retried; a failed cell is
recorded with its reason and retried on the next run. Run the same command again after an
interruption: finished cells are skipped, unfinished ones are redone, nothing is lost.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from common.config import RunConfig, config_fields
from common.errors import BudgetError, InputError
from common.runtime import check_stop

MODES = ("centralized", "federated", "federated-distributed", "federated-client-dp")
DP_LEVEL = {"federated": "sample", "federated-distributed": "distributed", "federated-client-dp": "client"}
SWEEP_DATASETS = ("synthetic-mimic", "synthetic-ctrate", "mimic-cxr", "ct-rate", "csv")

# The quick preset: the easy synthetic generator (short reports: ~5x faster per example than realistic ones)
# at 6,000 reports (4,506 for training), with a compute cap per cell: 2,000 examples is about a minute
# of DP training on 2 CPU cores. Measured alone (README, docs/results.md): 17.9 min for all 11 cells on
# 2026-12-07 (centralized cells 54-74 s, local-DP federated ones 102-104 s, distributed ones 128-134 s:
# 32 SecAgg+ rounds of ~2.6 s, compute-bound, each site runs a third of the batch); 27.8 min on 2026-11-30,
# when the same inference ran 1.5-2x slower. Roughly: 22,000 training examples at 20-30 ms, 18,000 scored
# reports at 7-10 ms, ~20 s of start-up per federated cell. A cap of 1,000 examples took 21.6 min
# and cost 0.15 of weighted F1 at epsilon 10 (0.05 without DP); 1,500 made the recipe pick batch 32 for
# its 30-step minimum (47 steps: no faster) and cost 0.02-0.05. So the cap stays at 2,000.
# The recipe's choices within the cap are printed in each cell's log and metrics.json; `radfl train` on
# the same data without the cap gives the full figures.
QUICK_REPORTS = 6_000
QUICK_EXAMPLES = 2_000

PRESETS = {
    # Centralized, federated (local DP) and federated (distributed DP) at four epsilons, on 2 CPU cores.
    "quick": dict(
        datasets="synthetic-mimic",
        models="minilm",
        epsilons="0.1,1,10,inf",
        modes="centralized,federated,federated-distributed",
        seeds="0",
        overrides=dict(
            synthetic_reports=QUICK_REPORTS,
            synthetic_difficulty="easy",
            max_examples=QUICK_EXAMPLES,
            monitor_rounds=0,  # the report reads final metrics only: no per-round evaluation
        ),
    ),
    # The paper's grid (arXiv 2506.04450) for machines that hold the data and the weights.
    "paper": dict(
        datasets="mimic-cxr,ct-rate",
        models="bert-small,bert-medium,albert-base",
        epsilons="0.01,0.1,1,10,inf",
        modes="centralized,federated,federated-client-dp",
        seeds="0,1,2",
        overrides={},
    ),
}


@dataclass(frozen=True)
class Cell:
    dataset: str
    data: str
    model: str
    mode: str
    epsilon: float
    seed: int

    @property
    def name(self) -> str:
        eps = "inf" if math.isinf(self.epsilon) else f"{self.epsilon:g}"
        model = self.model.replace("/", "_")
        return f"{self.dataset}__{model}__{self.mode}__eps{eps}__seed{self.seed}"


def add_sweep_arguments(parser) -> None:
    parser.add_argument(
        "--preset", choices=tuple(PRESETS), help="quick: embedded default on 2 CPU cores; paper: the paper's grid"
    )
    parser.add_argument(
        "--datasets", help="comma list: synthetic-mimic, synthetic-ctrate, mimic-cxr=PATH, ct-rate=PATH, csv=PATH"
    )
    parser.add_argument("--models", help="comma list of presets, HF ids or folders (default: minilm)")
    parser.add_argument("--epsilons", help="comma list, inf = non-private (default: 0.01,0.1,1,10,inf)")
    parser.add_argument("--modes", help=f"comma list of {', '.join(MODES)} (default: centralized,federated)")
    parser.add_argument("--seeds", help="comma list (default: 0)")
    parser.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    parser.add_argument(
        "--audit",
        type=int,
        default=0,
        metavar="M",
        help="also audit every cell with M canaries (a second run per cell)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    skip = {"dataset", "data", "model", "epsilon", "seed"}
    for f in config_fields(federated=True):
        if f.name not in skip:
            parser.add_argument(
                f"--{f.name.replace('_', '-')}",
                type=type(f.default),
                default=None,
                help=f"{f.metadata['help']} (default: {f.default})",
            )
    parser.set_defaults(out="runs/sweep")


def parse_grid(args) -> tuple[list[Cell], RunConfig]:
    preset = PRESETS.get(args.preset or "", {})
    pick = lambda name, fallback: getattr(args, name) or preset.get(name) or fallback  # noqa: E731
    datasets = []
    for entry in _split(pick("datasets", "synthetic-mimic")):
        name, _, path = entry.partition("=")
        if name not in SWEEP_DATASETS:
            raise InputError(f"unknown dataset {name!r} in --datasets; use {', '.join(SWEEP_DATASETS)}")
        if name in ("mimic-cxr", "ct-rate", "csv") and not path:
            raise InputError(f"--datasets {name} needs a path: {name}=PATH")
        datasets.append((name, path))
    try:
        epsilons = [float(e) for e in _split(pick("epsilons", "0.01,0.1,1,10,inf"))]
        seeds = [int(s) for s in _split(pick("seeds", "0"))]
    except ValueError:
        raise InputError("--epsilons must be numbers or inf and --seeds integers, comma separated") from None
    if any(not e > 0 for e in epsilons):
        raise InputError("every epsilon must be positive (inf for non-private)")
    modes = _split(pick("modes", "centralized,federated"))
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise InputError(f"unknown mode(s) {', '.join(unknown)}; use {', '.join(MODES)}")
    overrides = {
        **preset.get("overrides", {}),
        **{
            f.name: getattr(args, f.name)
            for f in config_fields(federated=True)
            if getattr(args, f.name, None) is not None
        },
    }
    base = RunConfig.from_dict({k: v for k, v in overrides.items() if k != "out"})
    cells = [
        Cell(d, p, m, mode, e, s)
        for (d, p), m, mode, e, s in itertools.product(
            datasets, _split(pick("models", "minilm")), modes, epsilons, seeds
        )
        if not (mode == "federated-distributed" and math.isinf(e))  # noise shares need a finite ε
    ]
    return cells, base


def _split(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def cell_config(base: RunConfig, cell: Cell, folder: Path) -> RunConfig:
    changes = dict(
        dataset=cell.dataset, data=cell.data, model=cell.model, epsilon=cell.epsilon, seed=cell.seed, out=str(folder)
    )
    if cell.mode in DP_LEVEL:
        changes["dp_level"] = DP_LEVEL[cell.mode]
    return base.replace(**changes)


def run_cell(base: RunConfig, cell: Cell, folder: Path, *, audit: int = 0) -> dict:
    """Run one cell in this process, its output in cell.log; returns its status record."""
    from simulations.centralized import run_centralized
    from simulations.federated import run_federated

    folder.mkdir(parents=True, exist_ok=True)
    cfg = cell_config(base, cell, folder)
    started = time.time()
    with open(folder / "cell.log", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"=== {cell.name} started {time.ctime(started)}", flush=True)
        try:
            if cell.mode == "centralized":
                run_centralized(cfg, show_progress=False)
            else:
                run_federated(cfg, show_progress=True)
            if audit:  # a second run of the same cell with m canaries: the white-box epsilon lower bound beside its F1
                from simulations.audit import run_audit

                mode = {
                    "centralized": "centralized",
                    "federated": "federated",
                    "federated-distributed": "distributed",
                }.get(cell.mode)
                if mode:
                    run_audit(cfg.replace(out=str(folder / "audit")), mode=mode, m=audit)
            status = {"status": "done"}
        except InputError as error:
            status = {"status": "infeasible" if isinstance(error, BudgetError) else "failed", "reason": str(error)}
        except Exception as error:  # noqa: BLE001 - a cell's failure is recorded, the sweep goes on
            traceback.print_exc()
            status = {"status": "failed", "reason": f"{type(error).__name__}: {error}"[:500]}
        print(f"=== {status['status']} after {time.time() - started:.0f} s", flush=True)
    status.update({"cell": asdict(cell), "seconds": time.time() - started})
    (folder / "status.json").write_text(json.dumps(status, indent=1))
    return status


def is_finished(folder: Path) -> bool:
    if (folder / "metrics.json").is_file() and _status(folder) in ("done", None):
        return True
    return _status(folder) == "infeasible"


def _status(folder: Path):
    try:
        return json.loads((folder / "status.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def sweep_command(args) -> int:
    from tqdm import tqdm

    cells, base = parse_grid(args)
    out = Path(args.out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"cells": [asdict(c) for c in cells], "base": base.to_dict()}, indent=1))
    todo = [c for c in cells if not is_finished(out / "cells" / c.name)]
    for cell in cells:  # killed between its metrics.json and its status.json: the run itself had finished
        folder = out / "cells" / cell.name
        if cell not in todo and _status(folder) is None:
            (folder / "status.json").write_text(
                json.dumps({"status": "done", "cell": asdict(cell), "recovered": True}, indent=1)
            )
    print(f"{len(cells)} cells, {len(cells) - len(todo)} already finished, {len(todo)} to run -> {out}")
    counts = {"done": 0, "failed": 0, "infeasible": 0}
    with tqdm(total=len(todo), unit="cell", disable=args.quiet, dynamic_ncols=True) as bar:
        for cell in todo:
            check_stop()
            bar.set_description(cell.name)
            status = run_cell(base, cell, out / "cells" / cell.name, audit=args.audit)
            check_stop()  # a stop requested during the cell: its result is kept, the next cell is not started
            counts[status["status"]] = counts.get(status["status"], 0) + 1
            if status["status"] != "done":
                tqdm.write(f"{cell.name}: {status['status']}: {status.get('reason', '')}")
            bar.update(1)
    print(f"finished: {counts['done']} done, {counts['infeasible']} infeasible, {counts['failed']} failed")
    if not args.no_report:
        from simulations.report import write_report

        paths = write_report(out)
        print("report: " + ", ".join(str(p) for p in paths))
    return 0
