"""`peftflow serve` / `stop` / `status`: the local stack, started and stopped by one command.

Three processes, all bound to 127.0.0.1, all state under one directory (default `.peftflow/`):
- the MLflow tracking server (SQLite backend, local artifact store served through the server),
- the Prefect server (SQLite) with its UI,
- the deployments of `infra/prefect.yaml`, served by one process (`python -m flows.stack.deployments`), so
  a click on "Run" in the Prefect UI starts a flow run.
`state.json` records each process's pid and start time; `stop` sends SIGTERM to each process and to
everything it started (flow runs run in their own sessions), waits, and only then uses SIGKILL.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_HOME = ".peftflow"
DEFAULT_SPEC = REPO_ROOT / "infra" / "prefect.yaml"
HOST = "127.0.0.1"
SERVICES = ("mlflow", "prefect", "deployments")  # start order; stopped in reverse
QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class ServeError(RuntimeError):
    """A problem the user can act on (port taken, already running, a server that did not start)."""


@dataclass
class Stack:
    home: Path
    prefect_port: int = 4200
    mlflow_port: int = 5000

    @property
    def prefect_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def state_file(self) -> Path:
        return self.home / "state.json"

    @property
    def ready_file(self) -> Path:
        """Written by the deployments process once its deployments are registered and resumed."""
        return self.home / "deployments.ready"

    def log_file(self, service: str) -> Path:
        return self.home / "logs" / f"{service}.log"

    def client_env(self) -> dict[str, str]:
        """What a client (the CLI, a test, the served flows) needs to talk to this stack."""
        return {"PREFECT_API_URL": f"{self.prefect_url}/api", "MLFLOW_TRACKING_URI": self.mlflow_url}


# -- state ---------------------------------------------------------------------------------------------


def read_state(home: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((home / "state.json").read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ServeError(
            f"{home / 'state.json'} is unreadable ({exc}); remove it if no server runs"
        ) from None


def _write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _process(entry: dict[str, Any]) -> psutil.Process | None:
    """The live process a state entry names; None if it exited or the pid now belongs to another one."""
    try:
        proc = psutil.Process(entry["pid"])
        if abs(proc.create_time() - entry["create_time"]) > 1.0 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError):
        return None


def status(home: Path) -> dict[str, Any] | None:
    """The recorded stack with each service's liveness, or None when nothing was started here."""
    state = read_state(home)
    if state is None:
        return None
    state["alive"] = {name: _process(entry) is not None for name, entry in state["processes"].items()}
    return state


@contextlib.contextmanager
def _lock(home: Path) -> Iterator[None]:
    """Two `serve`/`stop` commands on one home directory never interleave."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "serve.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ServeError(f"another peftflow serve/stop is working on {home}; wait for it") from None
        yield


# -- start -----------------------------------------------------------------------------------------------


def check_port_free(port: int, flag: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers bind: a port left in TIME_WAIT by a stopped server counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            raise ServeError(
                f"port {port} on {HOST} is already in use by another program; stop it or choose "
                f"another port with {flag}"
            ) from None


def _bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def _commands(stack: Stack, spec: Path, schedules: bool, training_slots: int) -> dict[str, list[str]]:
    mlflow_dir = stack.home / "mlflow"
    deployments = [sys.executable, "-m", "flows.stack.deployments", "--spec", str(spec)]
    deployments += ["--ready-file", str(stack.ready_file.resolve())]
    deployments += ["--training-slots", str(training_slots)] + ([] if schedules else ["--no-schedules"])
    return {
        "mlflow": [
            _bin("mlflow"),
            "server",
            "--host",
            HOST,
            "--port",
            str(stack.mlflow_port),
            "--backend-store-uri",
            f"sqlite:///{(mlflow_dir / 'mlflow.db').resolve()}",
            "--artifacts-destination",
            str((mlflow_dir / "artifacts").resolve()),
            "--serve-artifacts",
            "--workers",
            "1",
        ],
        "prefect": [_bin("prefect"), "server", "start", "--host", HOST, "--port", str(stack.prefect_port)],
        "deployments": deployments,
    }


def _env(stack: Stack) -> dict[str, str]:
    env = {**os.environ, **QUIET_ENV, **stack.client_env()}
    env["PREFECT_HOME"] = str((stack.home / "prefect").resolve())
    env["PREFECT_UI_API_URL"] = f"{stack.prefect_url}/api"
    env["PREFECT_SERVER_API_HOST"] = HOST
    env["PREFECT_SERVER_API_PORT"] = str(stack.prefect_port)
    # The pipeline's own loggers (flows.*) reach the flow run's logs in the UI, e.g. a tracking outage.
    env.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "flows")
    # Concurrency leases (the training slot, the retrain deployment's limit) on disk under PREFECT_HOME,
    # not in the server's memory: a restarted server still knows who holds a slot, and frees the slot
    # of a holder that died once its lease expires. In memory, a restart would keep such a slot taken
    # for ever, and every later training would wait for it.
    env.setdefault(
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE", "prefect.server.concurrency.lease_storage.filesystem"
    )
    # The served process looks for new runs every 2 s (Prefect's default: 10 s): a click on Run starts
    # the run at once.
    env.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _spawn(cmd: list[str], log: Path, env: dict[str, str]) -> dict[str, Any]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a Ctrl-C in this terminal does not reach it
        )
    return {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(), "cmd": cmd}


def _get_json(url: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def _healthy(stack: Stack, service: str, names: list[str]) -> bool:
    try:
        if service == "mlflow":
            with urllib.request.urlopen(f"{stack.mlflow_url}/health", timeout=3) as resp:
                return resp.status == 200
        if service == "prefect":
            return _get_json(f"{stack.prefect_url}/api/health") is True
        # The process says when it is done (a restart finds its earlier deployments already there).
        if not stack.ready_file.exists():
            return False
        found = _get_json(f"{stack.prefect_url}/api/deployments/filter", {"limit": 200})
        return set(names) <= {d["name"] for d in found if not d["paused"]}
    except (OSError, ValueError, urllib.error.URLError):
        return False


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def load_spec(path: str | Path) -> list[dict[str, Any]]:
    """The `deployments:` entries of a prefect.yaml (read here too, so `serve` checks it before starting)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ServeError(f"{path}: not a readable prefect.yaml ({exc})") from None
    entries = data.get("deployments") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(d, dict) and "name" in d for d in entries):
        raise ServeError(f"{path}: expected a prefect.yaml with a `deployments:` list of named entries")
    return entries


def deployment_names(spec: Path) -> list[str]:
    return [str(d["name"]) for d in load_spec(spec)]


def start(
    stack: Stack,
    spec: Path = DEFAULT_SPEC,
    schedules: bool = True,
    training_slots: int = 1,
    timeout_s: float = 240.0,
) -> dict[str, Any]:
    """Start the three processes, wait until each answers, record them; returns the state."""
    names = deployment_names(spec)
    with _lock(stack.home):
        current = status(stack.home)
        if current and any(current["alive"].values()):
            raise ServeError(
                f"peftflow serve is already running from {stack.home} (Prefect UI {current['prefect_url']}, "
                f"MLflow UI {current['mlflow_url']}); run `peftflow stop` first"
            )
        check_port_free(stack.prefect_port, "--prefect-port")
        check_port_free(stack.mlflow_port, "--mlflow-port")
        (stack.home / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
        (stack.home / "prefect").mkdir(parents=True, exist_ok=True)
        env = _env(stack)
        commands = _commands(stack, spec, schedules, training_slots)
        stack.ready_file.unlink(missing_ok=True)
        state: dict[str, Any] = {
            "home": str(stack.home.resolve()),
            "prefect_url": stack.prefect_url,
            "mlflow_url": stack.mlflow_url,
            "started_at": time.time(),
            "processes": {},
        }
        try:
            for service in SERVICES:
                if service == "deployments":  # it registers deployments: the servers must answer first
                    _wait(stack, ["mlflow", "prefect"], state, names, timeout_s)
                state["processes"][service] = _spawn(commands[service], stack.log_file(service), env)
                _write_state(stack.state_file, state)
            _wait(stack, ["deployments"], state, names, timeout_s)
        except BaseException:
            _stop_processes(state, timeout_s=20)
            stack.state_file.unlink(missing_ok=True)
            raise
        return state


def _wait(
    stack: Stack, services: list[str], state: dict[str, Any], names: list[str], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(services)
    while pending:
        for service in list(pending):
            if _process(state["processes"][service]) is None:
                raise ServeError(
                    f"the {service} process exited while starting; its log "
                    f"({stack.log_file(service)}) ends with:\n{_tail(stack.log_file(service))}"
                )
            if _healthy(stack, service, names):
                pending.remove(service)
        if pending and time.monotonic() > deadline:
            raise ServeError(
                f"{', '.join(pending)} did not become ready within {timeout_s:.0f} s; see "
                + ", ".join(str(stack.log_file(s)) for s in pending)
            )
        if pending:
            time.sleep(0.5)


# -- stop ------------------------------------------------------------------------------------------------


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _stop_processes(state: dict[str, Any], timeout_s: float) -> list[str]:
    """SIGTERM each recorded process tree (newest service first), wait, SIGKILL what is left."""
    stopped = []
    for service in reversed(SERVICES):
        entry = state["processes"].get(service)
        proc = _process(entry) if entry else None
        if proc is None:
            continue
        tree = _tree(proc)
        began = time.monotonic()
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(tree, timeout=timeout_s)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
        how = f"killed after {timeout_s:.0f} s" if alive else f"{time.monotonic() - began:.1f} s"
        stopped.append(f"{service} (pid {entry['pid']}, {how})")  # type: ignore[index]
    return stopped


def stop(home: Path, timeout_s: float = 30.0) -> list[str]:
    """Stop everything `start` recorded in `home`; returns what was stopped (empty: nothing ran)."""
    if not home.is_dir():
        return []
    with _lock(home):
        state = read_state(home)
        if state is None:
            return []
        stopped = _stop_processes(state, timeout_s)
        (home / "state.json").unlink(missing_ok=True)
        (home / "deployments.ready").unlink(missing_ok=True)
        return stopped
