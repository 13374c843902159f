"""The coordinating site: a Flower ServerApp that averages LoRA adapters, never reports.

FedAvg (weighted by training examples) over the adapter arrays; FFA-LoRA when configured (the
sites' A matrices stay at their shared seeded initialization, only B and the head travel);
optional client-level DP through Flower's server-side clipping wrapper; central evaluation of
the global adapter each round where the server holds a test split; a checkpoint every round.
"""

from __future__ import annotations

import logging
import time

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

from common import records as R
from common.config import RunConfig
from common.runtime import configure_threads
from server.federation import FederationRun, client_noise_multiplier
from server.strategy import AdapterFedAvg

app = ServerApp()
log = logging.getLogger("radfl.server")


def wait_for_sites(grid: Grid, wanted: int, seconds: float, minimum: int) -> int:
    """Wait (bounded) until `wanted` SuperNodes are connected; carry on with at least `minimum`."""
    deadline = time.monotonic() + seconds
    while True:
        count = len(list(grid.get_node_ids()))
        if count >= wanted or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    if count < minimum:
        raise RuntimeError(f"only {count} SuperNode(s) connected, fewer than fl.min-sites = {minimum}; start the sites first")
    if count != wanted:
        log.warning("fl.sites = %d but %d SuperNodes are connected; training with %d sites", wanted, count, count)
    return count


@app.main()
def main(grid: Grid, context: Context) -> None:
    configure_threads()
    cfg = RunConfig.from_flower(context.run_config)
    run = FederationRun(cfg)
    sites = wait_for_sites(grid, cfg.sites, seconds=float(cfg.wait_seconds), minimum=cfg.min_sites)
    run.start_clock()
    strategy = AdapterFedAvg(
        round_offset=run.done_rounds, min_replies=cfg.min_sites, on_train_round=run.record_train,
        on_evaluate_round=run.record_evaluate,
        # With a server-held test split the sites evaluate once, at the end; without one, every round.
        site_evaluation_rounds=None if run.eval_data is None else {run.remaining_rounds},
        fraction_train=1.0, fraction_evaluate=1.0,
        # Sample every connected site each round, but never wait for a lost one: a site that
        # drops out is skipped instead of blocking the round.
        min_train_nodes=cfg.min_sites, min_evaluate_nodes=cfg.min_sites, min_available_nodes=cfg.min_sites)
    if cfg.dp_level == "client":
        strategy = DifferentialPrivacyServerSideFixedClipping(
            strategy, noise_multiplier=client_noise_multiplier(cfg), clipping_norm=cfg.client_clip, num_sampled_clients=sites)
    offset = run.done_rounds

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0 and offset > 0:
            return None  # resumed: round `offset` was evaluated before the interruption
        metrics = run.evaluate(server_round + offset, {k: v.numpy() for k, v in arrays.items()})
        if metrics is None:
            return None
        return MetricRecord({k: float(metrics[k]) for k in ("weighted_f1", "micro_f1", "macro_f1")})

    if run.remaining_rounds:
        strategy.start(
            grid=grid, initial_arrays=ArrayRecord({k: Array(v) for k, v in run.initial_arrays().items()}),
            num_rounds=run.remaining_rounds, train_config=ConfigRecord({"local-epochs": cfg.local_epochs}),
            evaluate_fn=evaluate)
    record = run.finish(sites)
    if run.remaining_rounds and record["federation"]["rounds_done"] == 0:
        # Recorded in metrics.json; failing the run makes `flwr list` (and `radfl submit`) say so.
        raise RuntimeError("no round updated the global adapter: every site failed or declined (see metrics.json history)")
