"""The real local stack for tests: `peftflow serve` in a temporary home, and the Prefect REST calls the UI makes.

`LocalStack.start()` runs the CLI exactly as a user does (`python -m flows.cli serve ...`) on free
loopback ports; `trigger()` starts a deployment run the way the UI's "Run" button does (POST
`/deployments/{id}/create_flow_run` with the form's parameters and a SCHEDULED state).
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def set_dotted(params: dict[str, Any], key: str, value: Any) -> None:
    *path, last = key.split(".")
    node = params
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value


@dataclass
class LocalStack:
    home: Path
    prefect_port: int = field(default_factory=free_port)
    mlflow_port: int = field(default_factory=free_port)
    serve_output: str = ""

    @property
    def prefect_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def cli(self, *args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flows.cli", *args, "--home", str(self.home)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )

    def start(self, *extra: str) -> None:
        out = self.cli(
            "serve", "--prefect-port", str(self.prefect_port), "--mlflow-port", str(self.mlflow_port), *extra
        )
        self.serve_output = out.stdout + out.stderr
        if out.returncode != 0:
            raise RuntimeError(f"peftflow serve failed ({out.returncode}):\n{self.serve_output}")

    def stop(self) -> str:
        out = self.cli("stop", timeout=200)
        return out.stdout + out.stderr

    # -- one service down and up again, as a crash or an operator's restart does it ---------------------
    def stop_service(self, service: str, kill: bool = False, timeout: float = 60) -> None:
        """Stop one process of the stack and everything it started: SIGTERM (a restart), or SIGKILL
        (`kill`, a crash); returns once all of them are gone."""
        import psutil

        entry = json.loads((self.home / "state.json").read_text())["processes"][service]
        root = psutil.Process(entry["pid"])
        tree = [root, *root.children(recursive=True)]
        for proc in tree:
            proc.kill() if kill else proc.terminate()
        _, alive = psutil.wait_procs(tree, timeout=timeout)
        if alive:
            raise TimeoutError(f"{service} processes still alive {timeout} s after the signal: {alive}")

    def start_service(self, service: str, timeout: float = 180) -> float:
        """Start one stopped service again, with the command, port, data and environment `peftflow serve`
        gave it, recorded in state.json so that `stop` stops it; returns the seconds until it answered.

        The process is spawned by a short-lived helper, so that it is nobody's child here: a stopped
        server is then reaped at once, as the servers `peftflow serve` starts are.
        """
        began = time.monotonic()
        script = (
            "import json, sys\n"
            "from pathlib import Path\n"
            "from flows.stack import serve\n"
            "home, service, prefect_port, mlflow_port = Path(sys.argv[1]), sys.argv[2], *map(int, sys.argv[3:])\n"
            "stack = serve.Stack(home, prefect_port, mlflow_port)\n"
            "state = serve.read_state(home)\n"
            "cmd = state['processes'][service]['cmd']\n"
            "state['processes'][service] = serve._spawn(cmd, stack.log_file(service), serve._env(stack))\n"
            "serve._write_state(stack.state_file, state)\n"
        )
        subprocess.run(
            [
                sys.executable,
                "-c",
                script,
                str(self.home),
                service,
                str(self.prefect_port),
                str(self.mlflow_port),
            ],
            cwd=REPO_ROOT,
            check=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        health = {"mlflow": f"{self.mlflow_url}/health", "prefect": f"{self.prefect_url}/api/health"}[service]

        def answers() -> bool:
            with urllib.request.urlopen(health, timeout=5) as resp:
                return bool(resp.status == 200)

        wait_until(answers, timeout, f"{service} answering {health} after a restart")
        return time.monotonic() - began

    # -- Prefect REST, as the UI calls it --------------------------------------------------------------
    def api(self, path: str, body: Any = None, method: str | None = None) -> Any:
        """One REST call; 429/502/503 (a busy SQLite server) are retried with backoff, as Prefect's client does."""
        for attempt in range(6):
            req = urllib.request.Request(
                f"{self.prefect_url}/api{path}",
                data=None if body is None else json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
                method=method,
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    return json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as exc:
                if exc.code not in (429, 502, 503) or attempt == 5:
                    raise
                time.sleep(2**attempt)

    def deployment(self, name: str) -> dict[str, Any]:
        flow_name = name  # each deployment serves the flow of the same name
        return dict(self.api(f"/deployments/name/{flow_name}/{name}"))

    def trigger(self, name: str, overrides: dict[str, Any] | None = None) -> str:
        """Start a run with the deployment's default parameters, `overrides` (dotted keys) applied."""
        dep = self.deployment(name)
        params = copy.deepcopy(dep["parameters"])
        for key, value in (overrides or {}).items():
            set_dotted(params, key, value)
        run = self.api(
            f"/deployments/{dep['id']}/create_flow_run",
            {"parameters": params, "state": {"type": "SCHEDULED", "message": "Run from the Prefect UI"}},
        )
        return str(run["id"])

    def flow_run(self, run_id: str) -> dict[str, Any]:
        return dict(self.api(f"/flow_runs/{run_id}"))

    def wait(self, run_id: str, timeout: float = 400) -> dict[str, Any]:
        return self.wait_for_state(run_id, FINAL, timeout)

    def wait_for_state(self, run_id: str, states: tuple[str, ...], timeout: float = 200) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.flow_run(run_id)
            if run["state"]["type"] in states:
                return run
            time.sleep(0.5)
        raise TimeoutError(f"flow run {run_id} never reached {states}: {run['state']}")

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        body = {"artifacts": {"flow_run_id": {"any_": [run_id]}}}
        return list(self.api("/artifacts/filter", body))

    def logs(self, run_id: str) -> str:
        body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
        return "\n".join(entry["message"] for entry in self.api("/logs/filter", body))


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (a home directory, a port)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.split(")")[-1].split()[0] == "Z":  # a zombie has exited already
            continue
        cmd = raw.replace(b"\0", b" ").decode(errors="replace")
        if text in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, urllib.error.URLError):
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"{what} not true after {timeout} s")
