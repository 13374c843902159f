"""What a hospital does with a request: check it against its policy, charge its ledger, train, reply.

Order matters for the promise. Every check that can decline happens before a report is read for the
request; the round is charged to the site's lifetime ledger (fsync) before training, so a crash can
over-count but never under-count; a reply holds the adapter arrays and data-independent numbers only,
and any failure leaves as a reason code, its details in the site's own log (`state-dir/site.log`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import traceback
from dataclasses import dataclass

import numpy as np

from clients.policy import SitePolicy
from clients.site import fedavg_weight, session
from common import records as R
from common.adapters import all_finite, check_incoming, get_adapter_state, set_adapter_state
from common.config import RunConfig
from common.data import label_names_for
from common.errors import InputError
from common.ledger import charge, open_ledger
from common.metrics import compute_metrics
from common.privacy import PrivacyLedger, calibrate_noise, epsilon_spent
from common.recipe import recipe_for
from common.runtime import autocast_dtype
from common.training import predict_probs, train_local

Reason = R.Reason


class Declined(Exception):
    def __init__(self, reason: Reason, detail: str = "", **numbers):
        super().__init__(f"{reason.name}: {detail}" if detail else reason.name)
        self.reason, self.detail, self.numbers = reason, detail, numbers


def site_log(policy: SitePolicy | None) -> logging.Logger:
    """The site's own log: details that must not leave the site (errors, losses, timings)."""
    log = logging.getLogger("radfl.site")
    folder = (
        policy.state_folder()
        if policy
        else os.environ.get("RADFL_STATE_DIR", os.path.expanduser("~/.radfl/site-state"))
    )
    path = os.path.join(folder, "site.log")
    if not any(getattr(h, "baseFilename", None) == path for h in log.handlers):
        os.makedirs(folder, mode=0o700, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False  # ClientApp output may be collected by the simulation engine on the server's machine
        os.chmod(path, 0o600)
    return log


@dataclass
class Reply:
    arrays: dict | None
    metrics: dict


def answer(node_config: dict, run_config: dict, run_id: int, content, handler) -> Reply:
    """Run `handler`; a decline or any failure becomes a reason code, the details go to the site's log."""
    policy = None
    try:
        policy = SitePolicy.from_node_config(node_config)
        return handler(policy, run_config, run_id, content)
    except Declined as declined:
        site_log(policy).info("declined %s%s", declined.reason.name, f": {declined.detail}" if declined.detail else "")
        return _declined(policy, declined.reason, declined.numbers)
    except InputError as error:
        site_log(policy).error("input error: %s", error)
        return _declined(
            policy, Reason.NO_DATA if policy is None or "data" in str(error).lower() else Reason.CONFIG_REJECTED, {}
        )
    except Exception:  # noqa: BLE001 - no exception text may reach the server
        site_log(policy).error("failure:\n%s", traceback.format_exc())
        return _declined(policy, Reason.SITE_ERROR, {})


def _declined(policy, reason: Reason, numbers: dict) -> Reply:
    label = policy.label() if policy else -1
    return Reply(None, {R.DECLINED: 1.0, R.REASON: int(reason), R.SITE_INDEX: label, **numbers})


# ---------------------------------------------------------------- checks


def parse_run(run_config: dict) -> RunConfig:
    try:
        return RunConfig.from_flower(run_config)
    except InputError as error:
        raise Declined(Reason.CONFIG_REJECTED, str(error)) from None


def check_request(policy: SitePolicy, cfg: RunConfig) -> None:
    """Everything that can be decided before any report is read."""
    if cfg.model not in policy.allowed_models:
        raise Declined(Reason.MODEL_NOT_ALLOWED, cfg.model)
    allowed = set(policy.allowed_labels()) if not policy.simulated else None
    if allowed is not None and not set(label_names_for(cfg)) <= allowed:
        raise Declined(Reason.LABELS_NOT_ALLOWED, str(sorted(set(label_names_for(cfg)) - allowed)))
    if cfg.dp_level == "client" and not policy.allow_client_level_dp:
        raise Declined(Reason.CLIENT_LEVEL_REFUSED)
    if cfg.dp_level == "distributed" and not policy.allow_distributed_dp:
        raise Declined(Reason.DISTRIBUTED_REFUSED)
    private = cfg.private and cfg.dp_level != "client"
    if not private and policy.require_dp:
        raise Declined(Reason.NON_PRIVATE_REFUSED)
    if cfg.private and cfg.epsilon > policy.max_epsilon:
        raise Declined(Reason.EPSILON_ABOVE_POLICY, f"{cfg.epsilon} > {policy.max_epsilon}")
    if policy.privacy_unit == "patient" and cfg.privacy_unit != "patient":
        raise Declined(Reason.UNIT_REFUSED)


def run_key(cfg: RunConfig, kind: str) -> str:
    """The site's own name for a run's releases: a hash of its whole run config. The same run submitted again
    (a resumed run) continues its own budget; any other run starts a new one, and the lifetime ledger counts all."""
    return f"{kind}:{hashlib.sha256(json.dumps(cfg.to_flower(), sort_keys=True).encode()).hexdigest()[:16]}"


# ---------------------------------------------------------------- train


@dataclass(frozen=True)
class SitePlan:
    batch_size: int
    steps_per_round: int
    rounds: int
    noise_multiplier: float
    sample_rate: float
    optimizer: str
    lr: float
    head_lr: float
    max_grad_norm: float


def site_plan(cfg: RunConfig, n_units: int, *, private: bool, reports_per_unit: float = 1.0) -> SitePlan:
    """The site's recipe for its own N, spread over the run's rounds; σ calibrated once for every round."""
    epsilon = cfg.epsilon if private else math.inf
    # An explicit compute cap (train.max-examples) is the whole federation's: each site takes its share, so a
    # federated run does the centralized run's work. Without one, each site applies its own device's cap.
    cap = math.ceil(cfg.max_examples / max(cfg.sites, 1)) if cfg.max_examples else 0
    site_cfg = cfg.replace(batch_size=cfg.site_batch_size or cfg.batch_size, max_examples=cap)
    recipe = recipe_for(site_cfg, n_units, epsilon=epsilon, reports_per_unit=reports_per_unit)
    per_epoch = round(1 / recipe.sample_rate)
    local = (
        max(1, round(cfg.local_epochs * per_epoch))
        if cfg.local_epochs
        else max(1, math.ceil(recipe.steps / cfg.rounds))
    )
    sigma = 0.0
    if private:
        sigma = calibrate_noise(
            target_epsilon=epsilon,
            delta=cfg.delta,
            sample_rate=recipe.sample_rate,
            steps=local * cfg.rounds,
            accountant=cfg.accountant,
        )
    return SitePlan(
        recipe.batch_size,
        local,
        cfg.rounds,
        sigma,
        recipe.sample_rate,
        recipe.optimizer,
        recipe.lr,
        recipe.head_lr,
        recipe.max_grad_norm or 1.0,
    )


def budget_refusal(ledger, history: list, entry: tuple, cfg: RunConfig, policy: SitePolicy, life_delta: float):
    """Why the step `entry` may not be taken, or None: the run's ε target and the site's lifetime cap are hard caps."""
    if epsilon_spent(history + [entry], delta=cfg.delta, accountant=cfg.accountant) > cfg.epsilon:
        return Reason.RUN_BUDGET_SPENT
    if ledger.lifetime_epsilon(delta=life_delta, accountant=cfg.accountant, extra=[entry]) > policy.lifetime_epsilon:
        return Reason.LIFETIME_BUDGET_SPENT
    return None


def incoming_arrays(content) -> dict[str, np.ndarray]:
    if R.ARRAYS not in content.array_records:
        raise Declined(Reason.ADAPTER_REJECTED, "no arrays")
    return {k: v.numpy() for k, v in content[R.ARRAYS].items()}


def train_request(policy: SitePolicy, run_config: dict, run_id: int, content) -> Reply:
    cfg = parse_run(run_config)
    check_request(policy, cfg)
    if cfg.dp_level == "distributed":  # a noise share must never leave unmasked
        raise Declined(Reason.SECURE_AGGREGATION_REQUIRED)
    s = session(cfg, policy)
    unit = cfg.privacy_unit
    n_units = s.n_units(unit)
    private = cfg.private and cfg.dp_level != "client"
    if private and cfg.delta > min(policy.delta_cap(n_units), 1.0 / n_units):
        raise Declined(Reason.DELTA_ABOVE_POLICY, f"{cfg.delta} > {policy.delta_cap(n_units)}")
    arrays = incoming_arrays(content)
    problem = check_incoming(s.classifier.model, arrays, max_abs=policy.max_adapter_abs)
    if problem:
        raise Declined(Reason[problem.upper().replace("-", "_")])
    plan = site_plan(cfg, n_units, private=private, reports_per_unit=len(s.train) / n_units)
    key = run_key(cfg, "train" if cfg.dp_level != "client" else "train-client-level")
    life_delta = policy.delta_cap(n_units)
    with open_ledger(policy.state_folder(), s.fingerprint) as ledger:
        ledger.policy = {
            "lifetime_delta": life_delta,
            "lifetime_epsilon": policy.lifetime_epsilon,
            "units": n_units,
            "unit": unit,
            "site": policy.site_name or f"site-{policy.label()}",
            "accountant": cfg.accountant,
        }
        release = ledger.release(key)
        sigma, q = (
            (release.noise_multiplier, release.sample_rate) if release else (plan.noise_multiplier, plan.sample_rate)
        )
        history = list(release.history) if release else []
        entry = (sigma, q, plan.steps_per_round)
        numbers = _ledger_numbers(ledger, history, cfg, sigma, q, life_delta)
        if private:
            refusal = budget_refusal(ledger, history, entry, cfg, policy, life_delta)
            if refusal:
                raise Declined(refusal, **numbers)
        elif not math.isinf(policy.lifetime_epsilon):
            raise Declined(
                Reason.LIFETIME_BUDGET_SPENT, "a release without local noise needs lifetime-epsilon=inf", **numbers
            )
        charge(
            ledger,
            run=key,
            kind="train",
            unit=unit,
            epsilon_target=cfg.epsilon if private else math.inf,
            delta=cfg.delta,
            accountant=cfg.accountant,
            noise_multiplier=sigma if private else 0.0,
            sample_rate=q,
            steps=plan.steps_per_round,
        )
    set_adapter_state(
        s.classifier.model, {k: v for k, v in arrays.items() if k in get_adapter_state(s.classifier.model)}
    )
    ledger_now = PrivacyLedger(
        cfg.epsilon if private else math.inf,
        cfg.delta,
        cfg.accountant,
        plan.max_grad_norm,
        sigma,
        q,
        plan.steps_per_round * plan.rounds,
        history,
    )
    log = site_log(policy)
    result = train_local(
        s.classifier.model,
        s.data.dataset(s.train),
        ledger=ledger_now,
        steps=plan.steps_per_round,
        batch_size=plan.batch_size,
        lr=plan.lr,
        head_lr=plan.head_lr,
        optimizer=plan.optimizer,
        pad_id=s.classifier.pad_id,
        device=s.device,
        seed=cfg.seed,
        grad_sample_mode=s.grad_sample_mode,
        units=s.units(unit) if private else None,
        autocast_dtype=s.train_autocast,
    )
    log.info(
        "run %s round: %d steps, %d reports seen, loss %.4f, %.1f s, %d empty batches, %d gradients zeroed",
        key,
        result.steps,
        result.examples,
        result.mean_loss,
        result.seconds,
        result.empty_batches,
        result.dropped_gradients,
    )
    update = get_adapter_state(s.classifier.model)
    with open_ledger(policy.state_folder(), s.fingerprint) as ledger:
        numbers = _ledger_numbers(ledger, history + [entry], cfg, sigma, q, life_delta)
    if not all_finite(update):
        raise Declined(Reason.UPDATE_NOT_FINITE, **numbers)
    return Reply(
        update,
        {
            R.DECLINED: 0.0,
            R.REASON: int(Reason.OK),
            R.SITE_INDEX: policy.label(),
            R.WEIGHT: fedavg_weight(q, plan.batch_size),
            **numbers,
        },
    )


def _ledger_numbers(ledger, history, cfg, sigma, q, life_delta) -> dict:
    """The ledger's numbers a reply may carry: data-independent, and the ε they add up to."""
    private = sigma > 0
    run_eps = epsilon_spent(history, delta=cfg.delta, accountant=cfg.accountant) if private else math.inf
    life = ledger.lifetime_epsilon(delta=life_delta, accountant=cfg.accountant)
    return {
        R.EPSILON_SPENT: run_eps,
        R.LIFETIME_EPSILON: life,
        R.NOISE_MULTIPLIER: float(sigma),
        R.SAMPLE_RATE: float(q),
        R.STEPS: int(sum(h[2] for h in history)),
    }


# ---------------------------------------------------------------- evaluate


def evaluate_request(policy: SitePolicy, run_config: dict, run_id: int, content) -> Reply:
    """Plain metrics of a run's final adapter, once per run, where the policy allows it; else a decline."""
    if policy.allow_evaluation != "final":
        raise Declined(Reason.EVALUATION_NOT_ALLOWED)
    cfg = parse_run(run_config)
    check_request(policy, cfg)
    s = session(cfg, policy)
    arrays = incoming_arrays(content)
    problem = check_incoming(s.classifier.model, arrays, max_abs=policy.max_adapter_abs)
    if problem:
        raise Declined(Reason[problem.upper().replace("-", "_")])
    key = run_key(cfg, "evaluate")
    with open_ledger(policy.state_folder(), s.fingerprint) as ledger:
        evaluations = [r for r in ledger.releases if r.kind == "evaluate"]
        if ledger.release(key) is not None or len(evaluations) >= policy.max_evaluations:
            raise Declined(Reason.EVALUATION_ALREADY_RELEASED)
        charge(
            ledger,
            run=key,
            kind="evaluate",
            unit="report",
            epsilon_target=math.inf,
            delta=0.0,
            accountant=cfg.accountant,
            noise_multiplier=0.0,
            sample_rate=1.0,
            steps=1,
        )
    set_adapter_state(
        s.classifier.model, {k: v for k, v in arrays.items() if k in get_adapter_state(s.classifier.model)}
    )
    probs = predict_probs(
        s.classifier.model,
        s.data.dataset(s.test),
        pad_id=s.classifier.pad_id,
        device=s.device,
        autocast_dtype=autocast_dtype(s.device),
    )
    m = compute_metrics(s.data.reports.labels[s.test], probs, s.data.label_names)
    return Reply(
        None,
        {
            R.DECLINED: 0.0,
            R.REASON: int(Reason.OK),
            R.SITE_INDEX: policy.label(),
            R.TEST_REPORTS: len(s.test),
            "weighted-f1": m["weighted_f1"],
            "micro-f1": m["micro_f1"],
            "macro-f1": m["macro_f1"],
        },
    )
