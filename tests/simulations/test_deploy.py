"""One SuperNode per hospital on loopback: TLS, node authentication, each site reading its own folder.

A real `flower-superlink` (TLS, `--enable-supernode-auth`, no runtime dependency installation) and
three `flower-supernode` processes, each pointed at its own MIMIC-CXR-layout folder by
`--node-config` with its own privacy policy, run one 2-round DP-LoRA run with the tiny model,
submitted with `radfl submit`. site-a allows plain metrics of the final adapter; site-b caps a run's
epsilon below what the run asks and so declines every round (the server sees only a reason code).
While it starts, a SuperNode whose key was never registered tries to join and is refused. After
round 1, one hospital's SuperNode is killed (SIGKILL, like a crash): the run still completes,
because Flower reports the lost node after its ~60 s heartbeat window and fl.min-sites = 1. In that
wait, a second `radfl submit` whose run cannot start must exit 1 with a one-line reason. Then a
2-round distributed-DP run (SecAgg+) uses the two sites still online. One deployment serves all the
checks, which keeps the module near three minutes on 2 CPU cores.
Every process started here is stopped, also when a check fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from common.config import RunConfig
from common.datasets import load_mimic_cxr
from common.partition import dataset_splits
from common.recipe import recipe_for
from simulations.cli import main
from simulations.deploy import make_node_key, write_pilot_credentials
from simulations.flower import BIN, FlowerCLI, app_dir, descendants, flower_env, free_port, stop_tree
from simulations.site_tools import ledger_report

SITES = {"site-a": "st-elsewhere-academic", "site-b": "county-general", "site-c": "lakeview-clinic"}
KILLED = "site-c"
TARGET_EPSILON = 1.0
DIST_EPSILON = 0.5  # within site-b's max-epsilon
POLICY = {
    "site-a": "allow-evaluation='final' allow-distributed-dp=true",
    "site-b": "max-epsilon=0.5 allow-distributed-dp=true",
    "site-c": "allow-distributed-dp=true",
}


def wait_until(condition, seconds: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


def start(args: list[str], *, env: dict, log: Path, cwd: Path) -> subprocess.Popen:
    with open(log, "w") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(args, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)


def crash(process: subprocess.Popen) -> None:
    """SIGKILL a SuperNode and everything below it: no goodbye reaches the SuperLink."""
    for pid in [process.pid, *descendants(process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=10)


def rounds_done(out: Path) -> int:
    """The ServerApp's progress.json, which it rewrites after each round (maybe mid-write now)."""
    try:
        return int(json.loads((out / "progress.json").read_text())["round"])
    except (OSError, ValueError, KeyError):
        return 0


def supernode_args(port: int, creds: Path, key: Path, node_config: str, local_port: int) -> list[str]:
    return [
        str(BIN / "flower-supernode"),
        "--superlink",
        f"127.0.0.1:{port}",
        "--root-certificates",
        str(creds / "ca.crt"),
        "--auth-supernode-private-key",
        str(key),
        "--node-config",
        node_config,
        "--port",
        str(local_port),
    ]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    creds = tmp / "creds"
    write_pilot_credentials(creds, list(SITES))
    intruder_key = tmp / "intruder.key"
    intruder_key.write_bytes(make_node_key()[0])
    intruder_key.chmod(0o600)
    for k, (site, hospital) in enumerate(SITES.items()):
        assert (
            main(
                [
                    "synth",
                    "--layout",
                    "mimic-cxr",
                    "--reports",
                    "120",
                    "--hospital",
                    hospital,
                    "--seed",
                    str(k),
                    "--out",
                    str(tmp / "data" / site),
                ]
            )
            == 0
        )

    port = free_port()
    operator = tmp / "operator"  # the FLWR_HOME of whoever submits runs
    operator.mkdir()
    (operator / "config.toml").write_text(
        f'[superlink]\ndefault = "pilot"\n\n[superlink.pilot]\n'
        f'address = "127.0.0.1:{port}"\nroot-certificates = "{creds / "ca.crt"}"\n'
    )
    cli = FlowerCLI(operator, "pilot")
    processes: dict[str, subprocess.Popen] = {}
    found: dict = {"tmp": tmp, "out": tmp / "results" / "run"}
    started = time.monotonic()
    try:
        processes["superlink"] = start(
            [
                str(BIN / "flower-superlink"),
                "--ssl-ca-certfile",
                str(creds / "ca.crt"),
                "--ssl-certfile",
                str(creds / "server.crt"),
                "--ssl-keyfile",
                str(creds / "server.key"),
                "--enable-supernode-auth",
                "--disable-runtime-dependency-installation",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=flower_env(tmp / "superlink-home"),
            log=tmp / "superlink.log",
            cwd=tmp,
        )
        cli.wait_ready(60)
        node_ids = {site: cli.register(creds / f"{site}.pub", site) for site in SITES}
        found["node_ids"] = node_ids
        for k, site in enumerate(SITES):
            node_config = (
                f"data-path='{tmp / 'data' / site}' data-format='mimic-cxr' site-name='{site}' "
                f"partition-id={k} state-dir='{tmp / 'state' / site}' {POLICY[site]}"
            )
            env = {**flower_env(tmp / f"home-{site}"), "RADFL_THREADS": "1"}  # three sites share 2 cores
            processes[site] = start(
                supernode_args(port, creds, creds / f"{site}.key", node_config, free_port()),
                env=env,
                log=tmp / f"{site}.log",
                cwd=tmp,
            )
        wait_until(
            lambda: all(cli.supernodes().get(n) == "online" for n in node_ids.values()), 60, "three SuperNodes online"
        )

        run_config = (
            f"model.name='tiny' fl.rounds=2 fl.sites=3 fl.min-sites=1 train.batch-size=16 dp.delta=0.0002 "
            f"dp.target-epsilon={TARGET_EPSILON} data.dataset='mimic-cxr' run.out='{found['out']}' fl.wait-seconds=60"
        )
        processes["submit"] = start(
            [
                str(BIN / "radfl"),
                "submit",
                str(app_dir()),
                "pilot",
                "--run-config",
                run_config,
                "--timeout",
                "900",
                "--poll",
                "2",
            ],
            env=flower_env(operator),
            log=tmp / "submit.log",
            cwd=tmp,
        )

        # While the run starts, a SuperNode with a key nobody registered tries to join.
        processes["intruder"] = start(
            supernode_args(
                port,
                creds,
                intruder_key,
                f"data-path='{tmp / 'data' / 'site-a'}' data-format='mimic-cxr' site-name='intruder'",
                free_port(),
            ),
            env=flower_env(tmp / "home-intruder"),
            log=tmp / "intruder.log",
            cwd=tmp,
        )
        found["intruder_rc"] = processes["intruder"].wait(timeout=60)
        found["nodes_during_run"] = cli.supernodes()

        # Round 1 done (the ServerApp writes progress.json after each round): one hospital crashes.
        wait_until(lambda: rounds_done(found["out"]) >= 1 or processes["submit"].poll() is not None, 480, "round 1")
        assert rounds_done(found["out"]) >= 1, (tmp / "submit.log").read_text()[-3000:]
        crash(processes[KILLED])
        found["killed_at"] = time.monotonic() - started

        # While the SuperLink waits out the crashed site's heartbeat, a run that cannot start fails.
        failing = (
            f"model.name='tiny' data.dataset='mimic-cxr' fl.min-sites=5 fl.wait-seconds=1 "
            f"run.out='{tmp / 'results' / 'failed'}'"
        )
        with open(tmp / "failed.err", "w") as err:
            processes["failing"] = subprocess.Popen(
                [
                    str(BIN / "radfl"),
                    "submit",
                    str(app_dir()),
                    "pilot",
                    "--quiet",
                    "--timeout",
                    "120",
                    "--run-config",
                    failing,
                ],
                env=flower_env(operator),
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=tmp,
                start_new_session=True,
            )
        found["failed_rc"] = processes["failing"].wait(timeout=150)
        found["failed_err"] = (tmp / "failed.err").read_text().strip()
        found["submit_rc"] = processes["submit"].wait(timeout=600)
        found["seconds"] = time.monotonic() - started
        found["nodes_after_run"] = cli.supernodes()
        found["submit_log"] = (tmp / "submit.log").read_text()

        # Distributed DP on the same TLS deployment: the two surviving sites' noise shares under SecAgg+.
        found["ledgers_before_distributed"] = {site: ledger_report(tmp / "state" / site) for site in SITES}
        found["dist_out"] = tmp / "results" / "distributed"
        distributed = (
            f"model.name='tiny' fl.dp-level='distributed' fl.rounds=2 fl.sites=2 fl.min-sites=2 "
            f"fl.sample-rate=0.25 dp.delta=0.0002 dp.target-epsilon={DIST_EPSILON} data.dataset='mimic-cxr' "
            f"run.out='{found['dist_out']}' fl.wait-seconds=60"
        )
        with open(tmp / "distributed.log", "w") as log:
            processes["distributed"] = subprocess.Popen(
                [str(BIN / "radfl"), "submit", str(app_dir()), "pilot", "--run-config", distributed]
                + ["--timeout", "600", "--poll", "2"],
                env=flower_env(operator),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp,
                start_new_session=True,
            )
        found["dist_rc"] = processes["distributed"].wait(timeout=660)
        found["dist_log"] = (tmp / "distributed.log").read_text()
        found["seconds_distributed"] = time.monotonic() - started - found["seconds"]
        yield found
    finally:
        for process in reversed(list(processes.values())):
            stop_tree(process)


def test_an_unregistered_supernode_is_refused(deployment):
    log = (deployment["tmp"] / "intruder.log").read_text()
    assert deployment["intruder_rc"] != 0 and "Failed to activate SuperNode" in log
    assert "No SuperNode found with the given public key" in (deployment["tmp"] / "superlink.log").read_text()
    # Only the three registered hospitals are known to the SuperLink, and they were online.
    nodes = deployment["nodes_during_run"]
    assert set(nodes) == set(deployment["node_ids"].values()) and set(nodes.values()) == {"online"}


def test_each_site_trains_on_its_own_folder_within_its_own_policy(deployment):
    assert deployment["submit_rc"] == 0, deployment["submit_log"][-3000:]
    assert "finished:completed" in deployment["submit_log"]
    record = json.loads((deployment["out"] / "metrics.json").read_text())
    fed = record["federation"]
    assert fed["sites"] == 3 and fed["rounds_done"] == 2
    # The server holds no reports: its metrics come from site-a, whose policy allows the final ones.
    assert record["evaluation"].startswith("the sites' own test splits")
    assert [s["site"] for s in fed["per_site"]] == [0, 1, 2]
    assert [s["status"] for s in sorted(record["history"][0]["sites"], key=lambda s: s["site"])] == [
        "trained",
        "declined",
        "trained",
    ]
    declined = fed["per_site"][1]
    assert declined["trained_rounds"] == 0 and declined["reasons"] == {"epsilon-above-policy": 2}
    assert "epsilon_spent" not in declined  # nothing of site-b's reports was used or charged
    ledgers = deployment["ledgers_before_distributed"]  # as this run left them
    assert ledgers["site-b"] == []
    for k in (0, 2):
        site, row = list(SITES)[k], fed["per_site"][k]
        # The site's training reports are its own folder's train split, drawn with a seed kept in its state folder.
        own = load_mimic_cxr(deployment["tmp"] / "data" / site)
        (split_file,) = (deployment["tmp"] / "state" / site / "splits").iterdir()
        split = json.loads(split_file.read_text())
        train = dataset_splits(
            own, val_fraction=split["val_fraction"], test_fraction=split["test_fraction"], seed=split["seed"]
        )[0]
        assert row["sample_rate"] == pytest.approx(
            recipe_for(RunConfig(batch_size=16), len(train), epsilon=TARGET_EPSILON).sample_rate
        )
        assert 0 < row["epsilon_spent"] <= TARGET_EPSILON
        # Its lifetime ledger, kept in its own state folder, holds this run's training release.
        (ledger,) = ledgers[site]
        assert [r["kind"] for r in ledger["runs"] if r["kind"] != "evaluate"] == ["train"]
        assert ledger["lifetime_epsilon"] <= 4.0
    assert record["privacy"]["epsilon_spent"] <= TARGET_EPSILON
    # site-a's plain metrics of the final adapter are recorded in its ledger, apart from epsilon.
    assert ledgers["site-a"][0]["plain_evaluations"] == 1
    assert ledgers["site-c"][0]["plain_evaluations"] == 0


def test_a_crashed_site_does_not_hang_the_run(deployment):
    record = json.loads((deployment["out"] / "metrics.json").read_text())
    round2 = record["history"][1]
    assert sorted(s["status"] for s in round2["sites"]) == ["declined", "failed", "trained"] and round2["aggregated"]
    assert [s["error_code"] for s in round2["sites"] if s["status"] == "failed"] == [5]  # NODE_UNAVAILABLE
    assert deployment["nodes_after_run"][deployment["node_ids"][KILLED]] == "offline"
    print(
        f"run finished {deployment['seconds'] - deployment['killed_at']:.0f} s after the crash; "
        f"{deployment['seconds']:.0f} s from the SuperLink's start"
    )


def test_submit_exits_non_zero_with_one_line_when_the_run_fails(deployment):
    err = deployment["failed_err"]
    assert deployment["failed_rc"] == 1 and len(err.splitlines()) == 1 and err.startswith("radfl: error: run ")
    assert "finished:failed" in err and "fewer than fl.min-sites" in err


def test_distributed_dp_runs_over_the_tls_deployment_and_charges_each_site(deployment):
    """3 SuperNodes, one lost: distributed DP with the two online ones, every round a SecAgg+ sum of both."""
    assert deployment["dist_rc"] == 0, deployment["dist_log"][-3000:]
    record = json.loads((deployment["dist_out"] / "metrics.json").read_text())
    assert record["mode"] == "federated-distributed" and record["federation"]["rounds_done"] == 2
    assert [h["secure_aggregation"]["sites_in_sum"] for h in record["history"]] == [2, 2]
    assert record["privacy"]["epsilon_spent"] <= DIST_EPSILON
    for site in ("site-a", "site-b"):
        (ledger,) = ledger_report(deployment["tmp"] / "state" / site)
        new = [r for r in ledger["runs"] if r["run"].startswith("train-distributed")]
        assert len(new) == 1 and new[0]["steps"] == 2 and 0 < new[0]["epsilon_spent"] <= DIST_EPSILON
    print(f"distributed run: {deployment['seconds_distributed']:.0f} s")
