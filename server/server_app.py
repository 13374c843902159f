"""The coordinating site: a Flower ServerApp that averages LoRA adapters, never reports.

FedAvg over the adapter arrays (weighted by each site's public weight); FFA-LoRA when configured (the
sites' A matrices stay at the shared public start, only B and the head travel); radfl's client-level
DP aggregate; distributed DP under Flower's SecAgg+ (server/secure.py); the server's own evaluation
where it holds reports (simulations); a checkpoint every round.
"""

from __future__ import annotations

import logging
import time

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from common.config import RunConfig
from common.runtime import configure_threads
from server.federation import FederationRun, client_noise_multiplier
from server.strategy import AdapterFedAvg, ClientLevelDP

app = ServerApp()
log = logging.getLogger("radfl.server")


def exchange_name(messages) -> str:
    """A message exchange's stage: the SecAgg+ stage it carries (setup, share_keys, collect_masked_vectors,
    unmask), else its message type (train, evaluate)."""
    for message in messages:
        for record in message.content.config_records.values():
            if "stage" in record:
                return f"secagg+ {record['stage']}"
        return str(message.metadata.message_type)
    return "none"


def poll_faster(grid: Grid, *, first: float = 0.05, longest: float = 1.0, clock=None) -> None:
    """Flower's HTTP grid waits 3 s between polls for replies; a round of SecAgg+ has four exchanges and a
    distributed-DP run dozens of rounds, so that sleep alone would cost minutes. Poll with a short,
    growing interval instead (same semantics: push, then pull until every reply or the timeout).
    `clock(name, seconds)` receives each exchange's wall time (for `radfl bench`)."""

    def timed(send):
        def send_and_receive(messages, *, timeout: float | None = None):
            messages = list(messages)
            started = time.perf_counter()
            try:
                return send(messages, timeout=timeout)
            finally:
                if clock is not None:
                    clock(exchange_name(messages), time.perf_counter() - started)

        return send_and_receive

    def polled(messages, *, timeout: float | None = None):
        pending = set(grid.push_messages(messages))
        end = time.time() + (timeout or 0.0)
        replies, pause = [], first
        while timeout is None or time.time() < end:
            got = list(grid.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if not pending:
                break
            time.sleep(pause)
            pause = min(longest, pause * 1.5)
        return replies

    if hasattr(grid, "push_messages") and hasattr(grid, "pull_messages"):
        grid.send_and_receive = timed(polled)
    else:
        grid.send_and_receive = timed(grid.send_and_receive)


def wait_for_sites(grid: Grid, wanted: int, seconds: float, minimum: int) -> int:
    """Wait (bounded) until `wanted` SuperNodes are connected; carry on with at least `minimum`."""
    deadline = time.monotonic() + seconds
    while True:
        count = len(list(grid.get_node_ids()))
        if count >= wanted or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    if count < minimum:
        raise RuntimeError(
            f"only {count} SuperNode(s) connected, fewer than fl.min-sites = {minimum}; start the sites first"
        )
    if count != wanted:
        log.warning("fl.sites = %d but %d SuperNodes are connected; training with %d sites", wanted, count, count)
    return count


def run_rounds(grid: Grid, run: FederationRun, cfg: RunConfig, sites: int) -> None:
    """The Message-API rounds: train at every connected site, aggregate, evaluate, checkpoint."""
    offset = run.done_rounds
    options = dict(
        history=run.history,
        round_offset=offset,
        min_replies=cfg.min_sites,
        final_round=run.remaining_rounds,
        site_evaluation=run.evaluator.data is None,
        fraction_train=1.0,
        fraction_evaluate=1.0,
        # Sample every connected site each round, but never wait for a lost one.
        min_train_nodes=cfg.min_sites,
        min_evaluate_nodes=cfg.min_sites,
        min_available_nodes=cfg.min_sites,
    )
    if cfg.dp_level == "client":
        strategy = ClientLevelDP(
            noise_multiplier=client_noise_multiplier(cfg), clipping_norm=cfg.client_clip, **options
        )
    else:
        strategy = AdapterFedAvg(**options)

    def end_of_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            return None  # the start (public warm start or initialization) was evaluated before, or is not worth it
        metrics = run.end_round(server_round + offset, {k: v.numpy() for k, v in arrays.items()})
        return (
            MetricRecord({k: float(metrics[k]) for k in ("weighted_f1", "micro_f1", "macro_f1")}) if metrics else None
        )

    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord({k: Array(v) for k, v in run.arrays().items()}),
        num_rounds=run.remaining_rounds,
        train_config=ConfigRecord(),
        evaluate_fn=end_of_round,
    )


@app.main()
def main(grid: Grid, context: Context) -> None:
    configure_threads()
    cfg = RunConfig.from_flower(context.run_config)
    run = FederationRun(cfg, log=log.info)
    poll_faster(grid, clock=run.history.add_stage)
    sites = wait_for_sites(grid, cfg.sites, seconds=float(cfg.wait_seconds), minimum=cfg.min_sites)
    run.history.start_clock()
    if run.remaining_rounds:
        if cfg.dp_level == "distributed":
            from server.secure import run_secure_rounds

            run_secure_rounds(grid, context, run, cfg, sites)
        else:
            run_rounds(grid, run, cfg, sites)
    record = run.finish(sites)
    if run.remaining_rounds and record["federation"]["rounds_done"] == 0:
        reasons = sorted({r["reason"] for r in run.history.site_rows()})
        # Recorded in metrics.json; failing the run makes `flwr list` (and `radfl submit`) say so.
        raise RuntimeError(
            f"no round updated the global adapter: every site failed or declined ({', '.join(reasons)}; see metrics.json history)"
        )
