"""`radfl federate`: the federation on Flower's simulation engine, one call, nothing left running.

A private SuperLink (in its own FLWR_HOME, on a free loopback port) runs the radfl Flower app with
`num-supernodes = --sites`; the ServerApp writes DIR/metrics.json. The SuperLink, Ray and every
other process started here are stopped when the run ends, fails or is interrupted.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from clients.handlers import site_plan
from clients.policy import SIMULATED_SITES_ENV, simulated_sites_env
from common.config import RunConfig
from common.data import prepare
from common.errors import InputError
from common.model import load_tokenizer
from common.warmstart import ensure as ensure_warm_start
from simulations.flower import BIN, FlowerCLI, RunFailed, app_dir, failure_reason, free_port, stop_tree


def default_site_policy(cfg: RunConfig) -> str:
    """Simulated sites' policy when the researcher gives none: exactly what this run asks for (the
    researcher owns the data), and plain metrics of the final adapter. `--node-config` overrides keys."""
    eps = "inf" if not cfg.private else f"{cfg.epsilon:g}"
    return (
        f"max-epsilon={eps} lifetime-epsilon=inf require-dp={str(cfg.private and cfg.dp_level != 'client').lower()} "
        f"allow-client-level-dp={str(cfg.dp_level == 'client').lower()} allow-distributed-dp={str(cfg.dp_level == 'distributed').lower()} "
        f"allow-evaluation=final max-delta={cfg.delta:g}"
    )


def distributed_plan(cfg: RunConfig) -> RunConfig:
    """Distributed DP runs centralized DP-SGD's recipe at the pool's size: its q at every site, one step per round."""
    if cfg.dp_level != "distributed" or cfg.sample_rate:
        return cfg
    from common.recipe import recipe_for

    pool = prepare(cfg, load_tokenizer(cfg.model))
    recipe = recipe_for(cfg, len(pool.train))
    return cfg.replace(sample_rate=recipe.sample_rate, rounds=recipe.steps, max_grad_norm=recipe.max_grad_norm)


def preflight(cfg: RunConfig) -> None:
    """Fail in seconds, before any Flower process starts: data, the sites' partitions and plans, the warm start."""
    pool = prepare(cfg, load_tokenizer(cfg.model))
    for k, (train, _, _) in enumerate(pool.site_splits(cfg)):
        try:
            site_plan(cfg, len(train), private=cfg.private and cfg.dp_level != "client")
        except InputError as error:
            raise type(error)(f"site {k} ({len(train)} training reports): {error}") from None
    ensure_warm_start(cfg)  # built once here, so that the server and every site find it cached


def client_resources(device: str) -> str:
    """All CPU cores to one simulated site at a time (2 threads beat 2 sites of 1 thread on 2 cores,
    and memory stays at one model per process); a GPU share per site where CUDA is present."""
    import torch

    cores = max(1, len(os.sched_getaffinity(0)))
    cuda = device != "cpu" and torch.cuda.is_available()
    gpus = 1.0 / max(1, min(4, cores // 2)) if cuda else 0.0  # several sites share one GPU
    return f"client-resources-num-cpus={cores if not cuda else max(1, cores // 4)} client-resources-num-gpus={gpus}"


def run_federated(
    cfg: RunConfig, *, show_progress: bool = True, timeout: float = 6 * 3600, node_config: str = ""
) -> dict:
    cfg = distributed_plan(cfg.replace(out=os.path.abspath(cfg.out)))
    policies = simulated_sites_env(default_site_policy(cfg) + (";" + node_config if node_config else ""), cfg.sites)
    preflight(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="radfl-flwr-"))
    port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "radfl"\n\n[superlink.radfl]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    cli = FlowerCLI(home, "radfl")
    cli.env["RADFL_STATE_DIR"] = str(out / "site-state")  # simulated sites keep their ledgers beside the run
    cli.env[SIMULATED_SITES_ENV] = policies
    log_path = out / "flower.log"
    with open(home / "superlink.log", "w") as link_log:
        link = subprocess.Popen(
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--simulation",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--disable-runtime-dependency-installation",
            ],
            env=cli.env,
            stdout=link_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(out),
        )
    progress = _Progress(out / "progress.json", cfg.rounds, show_progress)
    try:
        cli.wait_ready(port=port)
        run_id = cli.submit(app_dir(), cfg.to_flower(), f"num-supernodes={cfg.sites} {client_resources(cfg.device)}")
        status = cli.wait(
            run_id, timeout=timeout, on_poll=progress.update
        )  # update() is True once metrics.json is written
        logs = cli.logs(run_id)
        log_path.write_text(logs)
    finally:
        stop_tree(link)
    progress.update()
    if status != "finished:completed":
        reason = failure_reason(logs)
        if "InputError" in logs:
            raise InputError(reason)  # the ServerApp rejected the run configuration
        raise RunFailed(f"the federated run ended {status}: {reason} (log: {log_path})")
    metrics = out / "metrics.json"
    if not metrics.is_file():
        raise RunFailed(f"the run completed but wrote no {metrics} (log: {log_path})")
    return json.loads(metrics.read_text())


class _Progress:
    """Print one line per finished round, read from the ServerApp's progress file."""

    def __init__(self, path: Path, rounds: int, enabled: bool):
        self.path, self.rounds, self.enabled, self.seen = path, rounds, enabled, 0
        self.started, self.wall_started = time.monotonic(), time.time()
        self.metrics = path.parent / "metrics.json"
        if path.is_file():
            path.unlink()

    def update(self) -> bool:
        """Print new rounds; True once this run's metrics.json exists (the run is about to end)."""
        finished = self.metrics.is_file() and self.metrics.stat().st_mtime >= self.wall_started
        if not self.enabled or not self.path.is_file():
            return finished
        try:
            history = json.loads(self.path.read_text())["history"]
        except (ValueError, KeyError):
            return finished
        for entry in history:
            if entry["round"] > self.seen and "global" in entry:
                self.seen = entry["round"]
                f1 = (entry.get("global") or {}).get("weighted_f1")
                eps = [
                    float(s["epsilon_spent"])
                    for s in entry.get("sites", [])
                    if s.get("status") == "trained" and "epsilon_spent" in s
                ]
                declined = [s["reason"] for s in entry.get("sites", []) if s.get("status") != "trained"]
                spent = "n/a" if not eps else "inf (no DP)" if max(eps) == float("inf") else f"{max(eps):.3f}"
                print(
                    f"round {entry['round']}/{self.rounds}: global weighted F1 "
                    f"{'n/a' if f1 is None else f'{f1:.4f}'}, max site epsilon {spent}, "
                    f"{time.monotonic() - self.started:.0f} s"
                    + (f"; declined/failed: {', '.join(declined)}" if declined else ""),
                    flush=True,
                )
        return finished
