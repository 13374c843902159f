"""Drive Flower's own engines from Python through the `flwr` CLI: submit, follow, check, clean up.

Flower 1.42 has no public in-process simulation API (`run_simulation` is deprecated), so radfl
does what a user would: start a SuperLink, `flwr run` the app, and poll `flwr list` for the run's
status, because `flwr run` exits 0 even when the ServerApp fails. Every process started here
runs in its own process group and is killed, with all its descendants, when the work is done.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from common.errors import InputError

BIN = Path(sys.executable).parent


class RunFailed(RuntimeError):
    """The Flower run did not complete; the message says why and where the log is."""


def app_dir() -> Path:
    """The folder whose pyproject.toml declares the radfl Flower app (the repository root)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file() or "[tool.flwr.app]" not in (root / "pyproject.toml").read_text():
        raise InputError(f"no Flower app found at {root}; install radfl from its repository (pip install -e .)")
    return root


@contextmanager
def staged_app(root: Path):
    """A temporary copy of exactly the files of the app folder that `flwr run` would pack into its FAB.

    `flwr run DIR` lists and resolves every file under DIR before its filters drop them: with a
    virtual environment in the repository (50,000 files) that alone took 6.8 s per run on 2 cores.
    Here the walk skips folders whose every file Flower's filters would drop (its built-in exclusions
    such as `.venv/`, and folders the root .gitignore ignores when it has no `!` re-include), and the
    files that remain go through Flower's own filters (`filter_paths_for_publish`, the FAB include and
    exclude patterns): the FAB built from the copy is Flower's (tests/simulations/test_flower.py)."""
    from flwr.cli.utils import build_pathspec, filter_paths_for_publish, load_gitignore_patterns
    from flwr.common.constant import FAB_EXCLUDE_PATTERNS, FAB_INCLUDE_PATTERNS

    root = Path(root).resolve()
    ignore = root / ".gitignore"
    patterns = load_gitignore_patterns(ignore) if ignore.is_file() and not ignore.is_symlink() else []
    excluded = build_pathspec(FAB_EXCLUDE_PATTERNS)
    ignored = None if any(p.startswith("!") for p in patterns) else build_pathspec(patterns)
    included = build_pathspec(FAB_INCLUDE_PATTERNS)

    def dropped(folder: str) -> bool:  # every file below `folder` is filtered out
        probe = f"{folder}/radfl-probe/radfl-probe"  # no suffix: only a folder-wide pattern matches it
        return excluded.match_file(probe) or (ignored is not None and ignored.match_file(probe))

    files: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = Path(dirpath).relative_to(root)
        dirnames[:] = [d for d in dirnames if not dropped((rel / d).as_posix())]
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():  # as Flower's collect_files
                files[(rel / name).as_posix()] = path
    keep = [
        rel
        for rel in filter_paths_for_publish(files)
        if rel in ("pyproject.toml", ".gitignore") or included.match_file(rel)
    ]
    staged = Path(tempfile.mkdtemp(prefix="radfl-app-"))
    try:
        for rel in keep:
            (staged / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(files[rel], staged / rel)
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flower_env(home: Path) -> dict:
    return {
        **os.environ,
        "FLWR_HOME": str(home),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # The app's dependencies are this environment's; a per-run `uv sync` would download them.
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # Ray starts its workers at niceness 15; the simulated sites would then lose the CPU to
        # Flower's own polling threads. The sites' training is the work here: run it at normal priority.
        "RAY_worker_niceness": "0",
    }


def run_config_arg(values: dict) -> str:
    """`key=value` pairs as TOML literals for `flwr run --run-config`."""
    return " ".join(f"{k}={json.dumps(v)}" for k, v in values.items())


def descendants(pid: int) -> list[int]:
    """All processes below `pid` (read from /proc), deepest last; Ray daemons included."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def stop_tree(process: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM a process, its group and every descendant; SIGKILL what is left after `grace` s."""
    if process.poll() is not None and not descendants(process.pid):
        return
    tree = descendants(process.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for target in [process.pid, *tree]:
            try:
                os.kill(target, sig)
            except ProcessLookupError:
                pass
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in [process.pid, *tree]):
            time.sleep(0.2)
        if not any(_alive(p) for p in [process.pid, *tree]):
            break
    process.wait(timeout=5)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


class FlowerCLI:
    """`flwr` commands against one SuperLink connection of a FLWR_HOME (None: its default connection)."""

    def __init__(self, home: Path, connection: str | None):
        self.home, self.connection, self.env = Path(home), connection, flower_env(Path(home))

    def _run(self, *args, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def _conn(self) -> list[str]:
        return [self.connection] if self.connection else []

    def wait_ready(self, seconds: float = 60, *, port: int | None = None) -> None:
        """Until `flwr list` answers. With the SuperLink's local `port`, first until it accepts a
        connection: each `flwr list` is a Python process (~1.3 s of CPU) that would slow the start-up
        it waits for on 2 cores."""
        deadline = time.monotonic() + seconds
        while port and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                break
            except OSError:
                time.sleep(0.2)
        while time.monotonic() < deadline:
            if self._run("list", *self._conn(), "--format", "json", timeout=30).returncode == 0:
                return
            time.sleep(0.3)
        raise RunFailed(f"the SuperLink did not answer within {seconds:.0f} s (see {self.home})")

    def submit(self, app: Path, run_config: dict | str | list[str], federation_config: str | None = None) -> int:
        """`flwr run`; `run_config` is a dict of values, or `--run-config` text(s) passed through as given."""
        texts = (
            [run_config_arg(run_config)]
            if isinstance(run_config, dict)
            else [run_config]
            if isinstance(run_config, str)
            else run_config
        )
        options = [*self._conn(), "--format", "json", *[a for t in texts for a in ("--run-config", t)]]
        if federation_config:
            options += ["--federation-config", federation_config]
        with staged_app(app) as staged:
            done = self._run("run", str(staged), *options, timeout=300)
        try:
            return int(json.loads(done.stdout)["run-id"])
        except (ValueError, KeyError):
            raise RunFailed(f"flwr run was refused: {_one_line(_error_message(done))[-500:]}") from None

    def run_info(self, run_id: int) -> dict:
        """The run's row of `flwr list --run-id` (status, status-details, elapsed, ...); {} if unknown."""
        done = self._run("list", *self._conn(), "--run-id", str(run_id), "--format", "json", timeout=60)
        try:
            return json.loads(done.stdout)["runs"][0]
        except (ValueError, KeyError, IndexError):
            return {}

    def status(self, run_id: int) -> str:
        return self.run_info(run_id).get("status", "unknown")

    def wait(self, run_id: int, *, timeout: float, on_poll=None, poll: float = 15.0) -> str:
        """Wait for the run to finish. Each `flwr list` starts a Python process that costs about a
        second of CPU, which on 2 cores slows the training it waits for; so the status is asked every
        `poll` seconds, or at once when `on_poll()` (called every second) returns True."""
        deadline = time.monotonic() + timeout
        next_check = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_check:
                status = self.status(run_id)
                if status.startswith("finished"):
                    return status
                next_check = time.monotonic() + poll
            if on_poll and on_poll():
                next_check = 0.0
            time.sleep(1.0)
        self._run("stop", str(run_id), *self._conn(), timeout=60)
        return "timeout"

    def logs(self, run_id: int) -> str:
        try:
            return self._run("log", str(run_id), *self._conn(), "--show", timeout=60).stdout
        except subprocess.TimeoutExpired:
            return ""

    def stream_logs(self, run_id: int) -> subprocess.Popen:
        """`flwr log` to this process's stdout until the run ends (the caller stops it with stop_tree)."""
        return subprocess.Popen(
            [str(BIN / "flwr"), "log", str(run_id), *self._conn()],
            env=self.env,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def register(self, public_key: Path, name: str | None = None) -> int:
        """`flwr supernode register`: allow the SuperNode holding this key's private half to join."""
        done = self._run(
            "supernode",
            "register",
            str(public_key),
            *self._conn(),
            "--format",
            "json",
            *(["--name", name] if name else []),
            timeout=60,
        )
        try:
            return int(json.loads(done.stdout)["node-id"])
        except (ValueError, KeyError):
            raise RunFailed(
                f"flwr supernode register refused {public_key}: {_one_line(_error_message(done))[-500:]}"
            ) from None

    def supernodes(self) -> dict[int, str]:
        """Registered SuperNodes and their status (registered, online, offline, unregistered)."""
        done = self._run("supernode", "list", *self._conn(), "--format", "json", timeout=60)
        try:
            return {int(n["node-id"]): n["status"] for n in json.loads(done.stdout)["nodes"]}
        except (ValueError, KeyError):
            raise RunFailed(f"flwr supernode list failed: {_one_line(_error_message(done))[-500:]}") from None


def _error_message(done: subprocess.CompletedProcess) -> str:
    """What a failed `flwr ... --format json` said: its error-message, else its whole output."""
    try:
        text = str(json.loads(done.stdout)["error-message"])
    except (ValueError, KeyError, TypeError):
        text = done.stdout + done.stderr
    return "\n".join(line for line in text.splitlines() if not line.startswith("Using SuperLink"))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def failure_reason(logs: str, details: str = "") -> str:
    """The most useful line of a failed run's log: an InputError's message if there is one, else
    the run's `status-details` from `flwr list` when given, else the last error line."""
    found = re.findall(r"InputError: (.+)", logs)
    if found:
        return found[-1].strip()
    if details and details != "N/A":
        return _one_line(details)[:400]
    errors = [line.strip() for line in logs.splitlines() if re.search(r"Error|Exception|error", line)]
    return errors[-1][:400] if errors else "no error message in the run's log"
