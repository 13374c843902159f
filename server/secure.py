"""Distributed DP: one DP-SGD step per round, the noise split across sites and summed under Flower's SecAgg+.

Each round every site Poisson-samples its reports at the run's rate q, clips every per-example gradient
to C, sums them, adds N(0, σ²C²/m) and submits that noisy sum (and its expected batch q·N_i) through
SecAgg+; the server learns only Σ clipped gradients + N(0, σ²C²·n/m) over the n ≥ m sites in the sum,
which for every report is at least as private as one centralized DP-SGD step at (σ, q) (the Gaussian
mechanism with variance ≥ σ²C²; Abadi et al. 2016). Dividing by the total expected batch and the
optimizer step are post-processing, so the same σ, q and steps give the ε of `radfl train`.

Flower 1.42 offers SecAgg+ only through the legacy `flwr.server.workflow` with a `LegacyContext`
strategy: this module is the one place radfl uses that API. SecAgg+ there is secure against an
honest-but-curious server only (public keys are not authenticated), so each site opts in through its
node config (`allow-distributed-dp`); docs/privacy.md states what a deviating server could learn.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from common.recipe import optimizer_for
from common.training import make_optimizer

# SecAgg+ ranges (docs/privacy.md): every value of a site's share is clipped to ±CLIP_RANGE and quantized
# with Q steps, sums are taken modulo M. Step 2c/Q = 6e-8 per value, far below the noise (σC/√m ≥ 1e-3 here);
# n·Q < M for up to 1023 sites.
CLIP_RANGE = 32.0
QUANTIZATION = 2**30
MODULUS = 2**40


def trainable_names(model) -> list[str]:
    """The one fixed order of the arrays a share holds (legacy Parameters carry no names)."""
    return sorted(n for n, p in model.named_parameters() if p.requires_grad)


def secure_settings(cfg, sites: int) -> dict:
    m = cfg.secagg_m or sites
    if m > sites:
        raise ValueError(f"fl.secagg-m = {m} exceeds the {sites} connected sites: no round could reach the threshold")
    return {
        "m": m,
        "threshold": m,
        "num_shares": sites if sites >= 3 else 1.0,
        # Flower reads an int threshold as a count below num_shares and a float as a fraction of it: t = n is 1.0.
        "threshold_arg": 1.0 if m >= sites else m,
        "clipping_range": CLIP_RANGE,
        "quantization_range": QUANTIZATION,
        "modulus_range": MODULUS,
        "quantization_step": 2 * CLIP_RANGE / QUANTIZATION,
    }


def run_secure_rounds(grid, context, run, cfg, sites: int) -> None:
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    settings = secure_settings(cfg, sites)
    model = run.classifier.model
    names = trainable_names(model)
    params = dict(model.named_parameters())
    name, lr, head_lr = optimizer_for(
        private=True, optimizer=cfg.optimizer, lr=cfg.lr
    )  # the recipe's, as centralized DP
    optimizer = make_optimizer(name, model, lr, head_lr)
    offset = run.done_rounds
    timings: dict[int, float] = {}

    class NoisySum(FedAvg):
        """Receives the weighted average of the shares (weights 1, max_weight 1): times n it is the noisy sum."""

        def configure_fit(self, server_round, parameters, client_manager):
            timings[server_round] = time.perf_counter()
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            n = len(results)
            total = [a.astype(np.float64) * n for a in parameters_to_ndarrays(results[0][1].parameters)]
            expected_batch = float(total[-1].ravel()[0])
            optimizer.zero_grad(set_to_none=True)
            for name, value in zip(names, total[:-1], strict=True):
                params[name].grad = torch.as_tensor(value / max(expected_batch, 1.0), dtype=params[name].dtype)
            optimizer.step()
            share_bytes = int(sum(a.size for a in total) * 8)  # each site's masked vector: one int64 per value
            rows = [{**_row(r), "bytes": share_bytes} for _, r in results]
            run.history.record_train(server_round + offset, rows, True)
            run.history.entry(server_round + offset)["secure_aggregation"] = {
                "sites_in_sum": n,
                "failures": len(failures),
                "expected_batch": expected_batch,
                "noise_variance_over_sigma2c2": n / settings["m"],
                "seconds": time.perf_counter() - timings.get(server_round, time.perf_counter()),
            }
            return ndarrays_to_parameters(_current(params, names)), {"sites-in-sum": n}

        def evaluate(self, server_round, parameters):
            if server_round == 0:
                return None
            entry = run.history.entry(server_round + offset)
            if "sites" not in entry:  # SecAgg+ halted this round: fewer than the threshold survived
                run.history.record_train(
                    server_round + offset,
                    [],
                    False,
                    f"secure aggregation halted: fewer than {settings['threshold']} sites' shares (global adapter unchanged)",
                )
            run.end_round(server_round + offset, None)  # evaluates a few of the dozens of rounds
            return None

    strategy = NoisySum(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=settings["m"],
        min_available_clients=settings["m"],
        initial_parameters=ndarrays_to_parameters(_current(params, names)),
        accept_failures=True,
    )
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=run.remaining_rounds), strategy=strategy)
    run.secure_aggregation = {
        **settings,
        "protocol": "Flower SecAgg+ (flwr.server.workflow.SecAggPlusWorkflow)",
        "security": "honest-but-curious server; a coalition of the server and c sites removes those sites' "
        "noise shares: the honest sites' noise is (n - c)/m of sigma^2 C^2",
    }
    DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=settings["num_shares"],
            reconstruction_threshold=settings["threshold_arg"],
            max_weight=1.0,
            clipping_range=CLIP_RANGE,
            quantization_range=QUANTIZATION,
            modulus_range=MODULUS,
            timeout=max(120.0, float(cfg.wait_seconds) * 5),
        )
    )(grid, legacy)


def _current(params, names) -> list[np.ndarray]:
    return [params[n].detach().cpu().numpy().astype(np.float32) for n in names]


def _row(fit_res) -> dict:
    from common import records as R

    metrics = dict(fit_res.metrics)
    row = {"site": int(metrics.get(R.SITE_INDEX, -1)), "status": "trained", "reason": "ok"}
    for key, name in (
        (R.EPSILON_SPENT, "epsilon_spent"),
        (R.LIFETIME_EPSILON, "lifetime_epsilon"),
        (R.NOISE_MULTIPLIER, "noise_multiplier"),
        (R.SAMPLE_RATE, "sample_rate"),
        (R.STEPS, "steps"),
    ):
        if key in metrics:
            row[name] = float(metrics[key])
    return row
