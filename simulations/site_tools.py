"""A hospital's own commands: `radfl ledger` (for its privacy officer), `radfl site-clean`, `radfl supernode`.

None of them talks to the server. `radfl supernode` checks the site's node config (its policy) and its
data before it starts Flower's SuperNode, so a site without `data-path`, with an unknown key or with
unreadable reports refuses to start with one line instead of failing at the first request.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

from common.config import to_json
from common.errors import InputError
from common.ledger import all_ledgers


def ledger_report(state_dir, *, delta: float | None = None) -> list[dict]:
    """Every data set's lifetime ledger as plain data: per run when, ε asked, ε spent; the lifetime ε at δ; what remains."""
    rows = []
    for ledger in all_ledgers(state_dir):
        policy = ledger.policy
        life_delta = delta or policy.get("lifetime_delta", 1e-5)
        accountant = policy.get("accountant", "prv")
        lifetime = ledger.lifetime_epsilon(delta=life_delta, accountant=accountant)
        cap = policy.get("lifetime_epsilon", math.inf)
        runs = [
            {
                "run": r.run,
                "kind": r.kind,
                "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started)),
                "unit": r.unit,
                "epsilon_asked": r.epsilon_target,
                "delta": r.delta,
                "epsilon_spent": r.epsilon() if r.kind != "evaluate" else None,
                "steps": r.steps,
                "noise_multiplier": r.noise_multiplier,
                "sample_rate": r.sample_rate,
                "plain_releases": r.plain,
            }
            for r in ledger.releases
        ]
        rows.append(
            {
                "data_set": ledger.fingerprint,
                "site": policy.get("site"),
                "units": policy.get("units"),
                "unit": policy.get("unit"),
                "lifetime_delta": life_delta,
                "lifetime_epsilon": lifetime,
                "lifetime_cap": cap,
                "remaining": max(cap - lifetime, 0.0)
                if math.isfinite(cap) and math.isfinite(lifetime)
                else (0.0 if math.isinf(lifetime) else math.inf),
                "plain_evaluations": sum(1 for r in ledger.releases if r.kind == "evaluate"),
                "runs": runs,
            }
        )
    return rows


def cmd_ledger(args) -> int:
    if not Path(args.state_dir).is_dir():
        raise InputError(f"no site state folder at {args.state_dir}; pass the SuperNode's state-dir")
    report = ledger_report(args.state_dir, delta=args.delta)
    if args.json:
        print(json.dumps([{k: _json(v) for k, v in row.items()} for row in report], indent=1))
        return 0
    if not report:
        print(f"{args.state_dir}: no ledger yet (nothing has been released from this site's reports)")
    for row in report:
        print(f"data set {row['data_set']} ({row['site']}, {row['units']} {row['unit']}s)")
        print(
            f"  lifetime epsilon {_fmt(row['lifetime_epsilon'])} at delta {row['lifetime_delta']:.2g}; cap {_fmt(row['lifetime_cap'])}; "
            f"remaining {_fmt(row['remaining'])}; plain evaluations released: {row['plain_evaluations']}"
        )
        print(f"  {'when':<20}{'kind':<10}{'epsilon asked':>14}{'epsilon spent':>14}{'steps':>8}  run")
        for run in row["runs"]:
            print(
                f"  {run['started']:<20}{run['kind']:<10}{_fmt(run['epsilon_asked']):>14}{_fmt(run['epsilon_spent']):>14}{run['steps']:>8}  {run['run']}"
            )
    return 0


def cmd_site_clean(args) -> int:
    """Remove a site's plain copies of its reports (the token cache); ledgers and the split file stay."""
    cache = Path(args.state_dir) / "cache"
    if not cache.is_dir():
        print(f"{cache}: nothing to remove")
        return 0
    count = sum(1 for _ in cache.rglob("*") if _.is_file())
    shutil.rmtree(cache)
    print(f"removed {count} cached file(s) under {cache} (tokenized reports); ledgers and splits kept")
    return 0


def cmd_supernode(args, extra: list[str]) -> int:
    """Check the node config and the site's data, then exec `flower-supernode` with the same arguments."""
    from clients.policy import SitePolicy
    from clients.site import _own_data
    from common.config import RunConfig
    from common.model import load_tokenizer
    from simulations.flower import BIN

    values = _parse_node_config(args.node_config)
    policy = SitePolicy.from_node_config(values, environ={})
    data = _own_data(RunConfig(model=policy.allowed_models[0]), policy, load_tokenizer(policy.allowed_models[0]))
    print(
        f"site {policy.site_name or policy.label()}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test reports "
        f"(split kept in {policy.state_folder()}); policy: max-epsilon {policy.max_epsilon:g}, lifetime-epsilon "
        f"{policy.lifetime_epsilon:g}, require-dp {policy.require_dp}, evaluation {policy.allow_evaluation}",
        flush=True,
    )
    command = [str(BIN / "flower-supernode"), *extra, "--node-config", args.node_config]
    if args.check_only:
        print("checked; would run: " + " ".join(command))
        return 0
    os.execv(command[0], command)
    return 0  # not reached


def _parse_node_config(text: str) -> dict:
    import tomllib

    try:
        return tomllib.loads("\n".join(f"{item}" for item in _split_pairs(text)))
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"--node-config is not key=value pairs in TOML syntax ({error})") from None


def _split_pairs(text: str) -> list[str]:
    import shlex

    return [f"{k}={_toml(v)}" for k, _, v in (item.partition("=") for item in shlex.split(text))]


def _toml(value: str) -> str:
    try:
        float(value)
        return value
    except ValueError:
        return value if value in ("true", "false") else json.dumps(value)


def _fmt(value) -> str:
    return "-" if value is None else "inf" if value == math.inf else f"{value:.3f}"


def _json(value):
    if isinstance(value, list):
        return [{k: _json(v) for k, v in item.items()} if isinstance(item, dict) else _json(item) for item in value]
    return to_json(value)


def add_site_arguments(subparsers) -> None:
    ledger = subparsers.add_parser("ledger", help="a site's lifetime privacy ledgers, for its privacy officer")
    ledger.add_argument("--state-dir", required=True, help="the SuperNode's state-dir (node config)")
    ledger.add_argument(
        "--delta", type=float, default=None, help="report the lifetime epsilon at this delta (default: the site's)"
    )
    ledger.add_argument("--json", action="store_true", help="machine-readable output")
    ledger.set_defaults(func=cmd_ledger)
    clean = subparsers.add_parser(
        "site-clean", help="remove a site's cached plain copies of its reports (ledgers stay)"
    )
    clean.add_argument("--state-dir", required=True)
    clean.set_defaults(func=cmd_site_clean)
    node = subparsers.add_parser(
        "supernode",
        help="check a hospital's node config and data, then start flower-supernode",
        description="Every argument other than --node-config and --check-only goes to flower-supernode.",
    )
    node.add_argument(
        "--node-config", required=True, help="the site's node config: data-path, data-format, policy keys"
    )
    node.add_argument("--check-only", action="store_true", help="check, print the policy and the split, do not start")
    node.set_defaults(func=cmd_supernode, passthrough=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)
