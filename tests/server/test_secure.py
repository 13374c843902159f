"""Distributed DP through Flower's SecAgg+, driven in-process: the real ServerApp workflow and the real ClientApp,
connected by a grid that hands each message to the site it is addressed to and records what the server receives."""

import copy
import io

import numpy as np
import pytest
from flwr.app import Context, RecordDict

import clients.secure as secure
from clients.client_app import app as client_app
from common.config import RunConfig
from common.privacy import epsilon_spent
from server.federation import FederationRun
from server.secure import CLIP_RANGE, QUANTIZATION, run_secure_rounds
from tests.flower_helpers import identity

SITES = 3


class _Run:
    run_id = 1


class LoopbackGrid:
    """Delivers each message to its site's ClientApp; `lost` maps (round, stage) to sites that never answer."""

    def __init__(self, cfg, tmp_path, lost=None):
        self.run = _Run()
        self.nodes = {
            100 + k: Context(
                run_id=1,
                node_id=100 + k,
                state=RecordDict(),
                run_config=cfg.to_flower(),
                node_config={
                    "partition-id": k,
                    "num-partitions": SITES,
                    "state-dir": str(tmp_path / f"site-{k}"),
                    "allow-distributed-dp": True,
                    "max-epsilon": 10.0,
                    "lifetime-epsilon": 100.0,
                    "max-delta": 1e-2,
                },
            )
            for k in range(SITES)
        }
        self.lost = lost or {}
        self.received = []  # (stage, site, content) of every reply the server got

    def get_node_ids(self):
        return list(self.nodes)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            stage = msg.content.config_records.get("secaggplus_configs", {}).get("stage", "plain")
            site = msg.metadata.dst_node_id - 100
            if site in self.lost.get((int(msg.metadata.group_id or 0), stage), ()):
                continue  # the site is gone: no reply
            reply = client_app(
                copy.deepcopy(msg), self.nodes[msg.metadata.dst_node_id]
            )  # each site gets its own copy, as on the wire
            self.received.append((stage, site, reply.content))
            replies.append(reply)
        return replies


def _cfg(tmp_path, **changes):
    base = dict(
        model="tiny",
        synthetic_reports=240,
        synthetic_difficulty="easy",
        delta=1e-3,
        epsilon=2.0,
        dp_level="distributed",
        sample_rate=0.25,
        rounds=2,
        out=str(tmp_path / "server"),
        baseline="off",
    )
    return RunConfig(**{**base, **changes})


@pytest.fixture
def recorded_shares(monkeypatch):
    shares = []
    original = secure.private_gradient_sum

    def record(*args, **kwargs):
        share = original(*args, **kwargs)
        shares.append(share)
        return share

    monkeypatch.setattr(secure, "private_gradient_sum", record)
    return shares


def _run(cfg, tmp_path, lost=None):
    identity()
    grid = LoopbackGrid(cfg, tmp_path, lost)
    run = FederationRun(cfg)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=cfg.to_flower())
    run_secure_rounds(grid, context, run, cfg, SITES)
    return run, grid


def test_the_server_sees_only_masked_shares_and_their_exact_sum(tmp_path, recorded_shares, monkeypatch):
    cfg = _cfg(tmp_path, rounds=1)
    run, grid = _run(cfg, tmp_path)
    collected = [(site, content) for stage, site, content in grid.received if stage == "collect_masked_vectors"]
    assert len(collected) == SITES and len(recorded_shares) == SITES
    step = 2 * CLIP_RANGE / QUANTIZATION
    for _site, content in collected:
        assert all(
            len(record) == 0 for record in content.array_records.values()
        )  # secaggplus_mod removed the plain arrays
        masked = np.concatenate([np.load(io.BytesIO(b)).ravel() for b in _masked_vectors(content)]).astype(np.float64)
        assert len(masked) > 1000
        for share in recorded_shares:  # no site's masked vector equals or tracks any site's noisy sum
            plain = np.concatenate([v.ravel() for v in share.values()])
            quantized = np.round((np.clip(plain, -CLIP_RANGE, CLIP_RANGE) + CLIP_RANGE) / step)
            n = min(len(quantized), len(masked))
            assert not np.allclose(masked[:n], quantized[:n])
            assert abs(np.corrcoef(masked[:n], quantized[:n])[0, 1]) < 0.1
    entry = run.history.entry(1)
    assert entry["secure_aggregation"]["sites_in_sum"] == SITES and entry["aggregated"]
    expected_batch = entry["secure_aggregation"]["expected_batch"]
    assert expected_batch == pytest.approx(0.25 * sum(len(s) for s in _site_trains(cfg)), abs=SITES * step)


def _masked_vectors(content):
    records = content.config_records.get("secaggplus_configs") or {}
    return records.get("masked_params", [])


def _site_trains(cfg):
    from clients.policy import SitePolicy
    from clients.site import session

    return [
        session(cfg, SitePolicy.from_node_config({"partition-id": k, "num-partitions": SITES}, environ={})).train
        for k in range(SITES)
    ]


def test_the_unmasked_aggregate_is_the_sum_of_the_noisy_shares_within_the_quantization_error(
    tmp_path, recorded_shares, monkeypatch
):
    import server.secure as server_secure

    seen = []
    real = server_secure.make_optimizer

    def spy(name, model, lr, head_lr):
        optimizer = real(name, model, lr, head_lr)
        step = optimizer.step

        def record_step(*args, **kwargs):
            seen.append(
                {n: p.grad.detach().double().numpy().copy() for n, p in model.named_parameters() if p.grad is not None}
            )
            return step(*args, **kwargs)

        optimizer.step = record_step
        return optimizer

    monkeypatch.setattr(server_secure, "make_optimizer", spy)
    run, grid = _run(_cfg(tmp_path, rounds=1), tmp_path)
    expected_batch = run.history.entry(1)["secure_aggregation"]["expected_batch"]
    step = 2 * CLIP_RANGE / QUANTIZATION
    for name, value in seen[0].items():
        truth = sum(share[name] for share in recorded_shares) / expected_batch
        np.testing.assert_allclose(value, truth, atol=SITES * step / expected_batch * 2, rtol=0, err_msg=name)


def test_each_sites_ledger_records_the_centralized_epsilon_of_its_sigma_q_and_steps(tmp_path, recorded_shares):
    from common.ledger import all_ledgers

    cfg = _cfg(tmp_path, rounds=2)
    _run(cfg, tmp_path)
    for k in range(SITES):
        (ledger,) = all_ledgers(tmp_path / f"site-{k}")
        (release,) = ledger.releases
        sigma, q, steps = release.history[0]
        assert (q, steps) == (0.25, 2)
        centralized = epsilon_spent([(sigma, 0.25, 2)], delta=cfg.delta)
        assert release.epsilon() == pytest.approx(centralized) and centralized <= cfg.epsilon


def test_a_site_lost_after_masking_leaves_the_round_aggregated_if_the_threshold_remains(tmp_path, recorded_shares):
    cfg = _cfg(tmp_path, rounds=2, secagg_m=2)  # each site adds 1/2 of the variance; SecAgg+ threshold 2 of 3
    run, _ = _run(cfg, tmp_path, lost={(1, "unmask"): {2}, (2, "collect_masked_vectors"): {1, 2}})
    first, second = run.history.entry(1), run.history.entry(2)
    assert first["aggregated"] and first["secure_aggregation"]["sites_in_sum"] == 3  # its masked share was already in
    assert second["aggregated"] is False and "halted" in second["note"]  # one share left: fewer than the threshold
