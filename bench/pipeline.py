"""What Prefect + MLflow cost per quickstart run, and what the tokenize cache saves.

Two figures from one invocation:

(a) Orchestration + tracking overhead: the quickstart through the `finetune` flow (Prefect
    ephemeral mode, MLflow on sqlite, both in a temporary directory) against the same step
    functions called directly in this process (tokenize → wrap → train → evaluate; no Prefect, no
    MLflow). Direct and flow runs alternate in ABBA order (direct, flow | flow, direct | ...) so a
    slow phase of a shared machine hits both alike; the ratio is the median of per-round
    flow/direct ratios. Every measured run gets a fresh output_dir: both paths tokenize from a
    COLD cache and train from scratch (no checkpoint to resume).
(b) Tokenize cache: the tokenize step on a fresh cache directory (cold) and then again on the same
    one (warm, a cache hit); the ratio is the median of per-round cold/warm ratios.

One-off costs of a process are measured first and reported, but kept out of both ratios: the
imports of prefect and mlflow, the first flow call (it starts Prefect's ephemeral server), the
sqlite schema MLflow creates on first use, and a first tiny-budget run of each path (lazy imports,
first model load). Within the runs, each step function and each MLflow call the flow makes is
timed as self time (MLflow logging during training is taken out of "train"); what is left of a
flow run is Prefect's engine (run creation, state transitions, log shipping) and the flow body.

    .venv/bin/python bench/pipeline.py                       # quickstart, 2 rounds (4 full runs)
    .venv/bin/python bench/pipeline.py --quick               # train.max_steps=5, 1 round (smoke)
    .venv/bin/python bench/pipeline.py --rounds 3 --set train.epochs=1

Progress bars are off and the runs' own printing goes to a log file (kept with --keep), in both
paths alike; the report goes to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["train.max_steps=5"]
WARMUP = ["train.max_steps=1", "train.eval_every='no'"]
OVERHEAD_TARGET = 1.10
CACHE_TARGET = 10.0


class Clock:
    """Self time per label of wrapped functions: a nested timed call is taken out of its caller."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._local = threading.local()

    def patch(self, owner: Any, attr: str, label: str) -> None:
        """Replace `owner.attr` (a function, method or classmethod) with a timed wrapper."""
        raw = vars(owner)[attr]
        is_cm = isinstance(raw, classmethod)
        timed = self.wrap(label, raw.__func__ if is_cm else raw)
        setattr(owner, attr, classmethod(timed) if is_cm else timed)

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            stack = self._local.__dict__.setdefault("stack", [])
            stack.append(0.0)  # time spent in timed callees
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                took = time.perf_counter() - start
                self.seconds[label] += took - stack.pop()
                self.calls[label] += 1
                if stack:
                    stack[-1] += took

        return inner

    def take(self) -> tuple[dict[str, float], dict[str, int]]:
        out = dict(self.seconds), dict(self.calls)
        self.seconds.clear()
        self.calls.clear()
        return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"), help="flow config YAML")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter, e.g. --set train.epochs=1 (repeatable)")
    ap.add_argument("--quick", action="store_true", help=f"tiny training budget ({' '.join(QUICK)}), 1 round")
    ap.add_argument("--rounds", type=int, default=None, help="ABBA rounds of (direct, flow); default 2, quick 1")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (run log, mlruns)")
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 2)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    return args


def setup_env(work: Path) -> None:
    """Offline, quiet, and every Prefect / MLflow file in `work` (set before either is imported)."""
    for key, value in {
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        "TOKENIZERS_PARALLELISM": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    }.items():
        os.environ.setdefault(key, value)
    # Ephemeral mode with a fresh database, whatever the caller's profile points at.
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["PREFECT_HOME"] = str(work / "prefect")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"


@contextlib.contextmanager
def captured(log: Path) -> Iterator[None]:
    """Send the runs' printing (Trainer loss dicts, warnings) to `log`; show its tail on failure."""
    with open(log, "a", encoding="utf-8") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        try:
            yield
        except BaseException:
            fh.flush()
            sys.__stderr__.write(log.read_text(encoding="utf-8")[-4000:])
            raise


class CpuMeter:
    """CPU seconds by who spent them: this process's main thread, its other Python threads (Prefect's
    and MLflow's workers), its native threads (torch's intra-op pool) and its child processes (the
    ephemeral Prefect server). On a 2-core machine any background CPU competes with training."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.before = self._sample()

    def _sample(self) -> dict[str, float]:
        python = {t.native_id: t.name for t in threading.enumerate()}
        main = threading.main_thread().native_id
        out: dict[str, float] = defaultdict(float)
        for th in self.proc.threads():
            cpu = th.user_time + th.system_time
            if th.id == main:
                out["cpu: main thread"] += cpu
            elif th.id in python:
                out[f"cpu: thread {python[th.id]}"] += cpu
        total = self.proc.cpu_times()
        out["total"] = total.user + total.system
        kids = 0.0
        for child in self.proc.children(recursive=True):
            try:
                t = child.cpu_times()
            except Exception:  # exited meanwhile
                continue
            kids += t.user + t.system
        out["cpu: child processes (Prefect server, git)"] = kids + total.children_user + total.children_system
        return out

    def take(self) -> dict[str, float]:
        """CPU seconds since the last call, per consumer."""
        now = self._sample()
        delta = {k: now[k] - self.before.get(k, 0.0) for k in now}
        self.before = now
        threads = sum(v for k, v in delta.items() if k.startswith("cpu: thread"))
        delta["cpu: native threads (torch pool)"] = delta.pop("total") - delta["cpu: main thread"] - threads
        return {k: v for k, v in delta.items() if abs(v) >= 0.005 or not k.startswith("cpu: thread")}


@contextlib.contextmanager
def paused(proc: Any) -> Iterator[None]:
    """Stop this process's children (the ephemeral Prefect server) for a direct run, so that the
    baseline shares the machine with no Prefect work at all; they carry on afterwards."""
    children = proc.children(recursive=True)
    for child in children:
        child.suspend()
    try:
        yield
    finally:
        for child in children:
            child.resume()


def drain_prefect() -> None:
    """Wait until the flow run's logs and events have reached the server (work the run caused, which
    a `peftflow run` process also waits for at exit); this also closes the events websocket."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=60)
    EventsWorker.drain_all(timeout=60)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    setup_env(work)
    sys.path.insert(0, str(ROOT))
    try:
        return run(args, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    one_off: list[tuple[str, float]] = []
    t_base, _ = timed(lambda: __import__("flows.steps.train"))  # torch, transformers, the steps
    t_prefect, prefect = timed(lambda: __import__("prefect"))
    t_mlflow, _ = timed(lambda: __import__("mlflow"))
    one_off += [("import torch + transformers + flows.steps", t_base), ("import prefect", t_prefect),
                ("import mlflow", t_mlflow)]

    import torch

    from flows import finetune as flow_mod
    from flows import tracking
    from flows.params import FinetuneParams
    from flows.steps import data as data_step
    from flows.steps import evaluate as evaluate_step
    from flows.steps import model as model_step
    from flows.steps import train as train_step

    overrides = [*(QUICK if args.quick else []), *args.overrides]
    base = FinetuneParams.from_yaml(args.config, overrides)
    # Absolute data paths, then run from `work`, where MLflow puts its ./mlruns artifact store.
    data = base.data.model_copy(update={
        k: os.path.abspath(getattr(base.data, k)) for k in ("train_file", "test_file") if getattr(base.data, k)
    })
    base = base.model_copy(update={"data": data})
    os.chdir(work)
    log = work / "runs.log"

    clock = Clock()
    for owner, attr, label in (
        (data_step, "tokenize", "tokenize"), (model_step, "wrap", "wrap"), (train_step, "train", "train"),
        (evaluate_step, "evaluate", "evaluate"), (flow_mod, "preflight", "preflight"),
        (tracking.RunTracker, "start", "mlflow: create run, log params"),
        (tracking.RunTracker, "log_dataset", "mlflow: log_dataset"),
        (tracking.RunTracker, "log_wrap", "mlflow: log_wrap"),
        (tracking.RunTracker, "log_step", "mlflow: log_step (in train)"),
        (tracking.RunTracker, "log_train", "mlflow: log_train (adapter, curve)"),
        (tracking.RunTracker, "log_eval", "mlflow: log_eval (predictions)"),
        (tracking.RunTracker, "finish", "mlflow: finish"),
        (tracking.RunTracker, "url", "mlflow: url"),
        (flow_mod, "_prefect_tags", "prefect: run tags"),
        (flow_mod, "_prefect_artifacts", "prefect: artifacts"),
    ):
        clock.patch(owner, attr, label)

    counter = iter(range(1_000_000))

    def fresh(params: FinetuneParams, extra: list[str] = ()) -> FinetuneParams:  # type: ignore[assignment]
        p = params.model_copy(update={"output_dir": str(work / f"out-{next(counter)}")})
        if extra:
            from flows.params import apply_override

            dumped = p.model_dump(mode="json")
            for item in extra:
                apply_override(dumped, item)
            p = FinetuneParams.model_validate(dumped)
        return p

    drain = clock.wrap("prefect: drain logs + events", drain_prefect)
    meter = CpuMeter()

    def direct(params: FinetuneParams) -> dict[str, float]:
        with paused(meter.proc):
            return direct_steps(params)

    def direct_steps(params: FinetuneParams) -> dict[str, float]:
        tokenized = data_step.tokenize(params, os.path.join(params.output_dir, "cache", "tokenized"))
        model_step.wrap(params, tokenized.label_names)
        run_dir = os.path.join(params.output_dir, "runs", flow_mod.run_key(params))
        trained = train_step.train(params, tokenized, run_dir)
        return evaluate_step.evaluate(params, tokenized, trained.adapter_dir).metrics

    def flow(params: FinetuneParams) -> dict[str, float]:
        metrics = flow_mod.finetune(params)["metrics"]
        drain()
        return metrics

    paths = {"direct": direct, "flow": flow}

    @prefect.flow(name="bench-empty")
    def empty() -> None:
        return None

    with captured(log):
        one_off.append(("Prefect: first flow call (starts the ephemeral server)", timed(empty)[0]))
        drain()
        one_off.append(("Prefect: an empty flow run, once started (+ drain)", timed(lambda: (empty(), drain()))[0]))
        one_off.append(("MLflow: first client call (creates the sqlite schema)",
                        timed(lambda: tracking._client().search_experiments())[0]))
        for name, fn in paths.items():
            one_off.append((f"first {name} run in process ({' '.join(WARMUP)})",
                            timed(lambda fn=fn: fn(fresh(base, WARMUP)))[0]))
        clock.take()
        meter.take()

        order = []
        for r in range(args.rounds):
            order += [(r, "direct"), (r, "flow")] if r % 2 == 0 else [(r, "flow"), (r, "direct")]
        totals: dict[str, list[float]] = {"direct": [], "flow": []}
        parts: dict[str, list[dict[str, float]]] = {"direct": [], "flow": []}
        calls: dict[str, dict[str, int]] = {}
        cpu: dict[str, list[dict[str, float]]] = {"direct": [], "flow": []}
        metrics: list[dict[str, float]] = []
        for _, name in order:
            took, m = timed(lambda name=name: paths[name](fresh(base)))
            seconds, n = clock.take()
            cpu[name].append(meter.take())
            totals[name].append(took)
            parts[name].append({**seconds, "(unattributed: engine, flow body)": took - sum(seconds.values())})
            calls.setdefault(name, n)
            metrics.append(m)

        cold, warm = [], []
        for _ in range(max(args.rounds, 3)):
            p = fresh(base)
            cache = os.path.join(p.output_dir, "cache")
            t_cold, first = timed(lambda p=p, cache=cache: data_step.tokenize(p, cache))
            t_warm, second = timed(lambda p=p, cache=cache: data_step.tokenize(p, cache))
            if first.cached or not second.cached:
                raise RuntimeError(f"tokenize cache: expected a miss then a hit, got {first.cached}, {second.cached}")
            cold.append(t_cold)
            warm.append(t_warm)

    report(args, base, one_off, order, totals, parts, calls, cpu, metrics, cold, warm, torch)
    return 0


def report(args: argparse.Namespace, base: Any, one_off: list[tuple[str, float]], order: list[tuple[int, str]],
           totals: dict[str, list[float]], parts: dict[str, list[dict[str, float]]],
           calls: dict[str, dict[str, int]], cpu: dict[str, list[dict[str, float]]], metrics: list[dict[str, float]], cold: list[float],
           warm: list[float], torch: Any) -> None:
    med = statistics.median
    t = base.train
    budget = f"max_steps={t.max_steps}" if t.max_steps > 0 else f"epochs={t.epochs:g}"
    print(f"\n== bench/pipeline.py: {os.path.relpath(args.config, ROOT)} {' '.join(args.overrides)}".rstrip())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}; train {budget}, batch {t.batch_size}; "
          f"{args.rounds} round(s), ABBA order; medians")
    print("cache: every measured run starts from a fresh output_dir, so both paths tokenize from a COLD cache")

    print("\none-off process costs (not per run; excluded from the ratios)")
    for label, seconds in one_off:
        print(f"  {label:<66}{seconds:8.2f} s")

    print("\nper run, self time (a timed callee is taken out of its caller), median over rounds")
    labels = list(dict.fromkeys(k for name in ("direct", "flow") for row in parts[name] for k in row))
    labels.sort(key=lambda k: (k.startswith("("), k.startswith(("mlflow", "prefect")), k == "preflight"))
    print(f"  {'component':<40}{'calls':>6}{'direct s':>10}{'flow s':>10}{'flow-direct':>13}")
    for label in labels:
        d = med([row.get(label, 0.0) for row in parts["direct"]])
        f = med([row.get(label, 0.0) for row in parts["flow"]])
        n = calls["flow"].get(label, calls["direct"].get(label, 0))
        print(f"  {label:<40}{n or '':>6}{d:10.2f}{f:10.2f}{f - d:+13.2f}")
    d_tot, f_tot = med(totals["direct"]), med(totals["flow"])
    print(f"  {'TOTAL wall':<40}{'':>6}{d_tot:10.2f}{f_tot:10.2f}{f_tot - d_tot:+13.2f}")

    print("\nCPU seconds per run, by consumer, median over rounds (the server is stopped in direct runs)")
    names = sorted({k for name in ("direct", "flow") for row in cpu[name] for k in row})
    for label in names:
        d = med([row.get(label, 0.0) for row in cpu["direct"]])
        f = med([row.get(label, 0.0) for row in cpu["flow"]])
        print(f"  {label:<46}{d:10.2f}{f:10.2f}{f - d:+13.2f}")

    print("\nrounds")
    ratios = []
    for r in range(args.rounds):
        d, f = totals["direct"][r], totals["flow"][r]
        first = next(name for rr, name in order if rr == r)
        ratios.append(f / d)
        print(f"  {r + 1}  {first} first   direct {d:8.2f} s   flow {f:8.2f} s   flow/direct {f / d:.3f}")
    same = all(m == metrics[0] for m in metrics)
    shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics[0].items()))
    print(f"  eval metrics identical in every measured run: {'yes' if same else 'NO'} ({shown})")

    print("\ntokenize step, fresh cache directory per round")
    for i, (c, w) in enumerate(zip(cold, warm), 1):
        print(f"  {i}  cold {c:7.3f} s   warm {w:7.3f} s   cold/warm {c / w:6.1f}x")

    overhead = med(ratios)
    cpu_ratio = med([sum(f.values()) / sum(d.values()) for d, f in zip(cpu["direct"], cpu["flow"])])
    speedup = med([c / w for c, w in zip(cold, warm)])
    ok = "met" if overhead <= OVERHEAD_TARGET else "NOT met"
    print(f"\nRATIO orchestration+tracking overhead (flow/direct, median of {len(ratios)}) = {overhead:.3f}"
          f"  (target <= {OVERHEAD_TARGET:.2f}: {ok})")
    print(f"  supplementary: CPU seconds (this process + children), flow/direct = {cpu_ratio:.3f}"
          "  (less sensitive than wall time to other load on a shared machine)")
    ok = "met" if speedup >= CACHE_TARGET else "NOT met"
    print(f"RATIO tokenize cold/warm cache (median of {len(cold)}) = {speedup:.1f}x"
          f"  (target >= {CACHE_TARGET:.0f}x: {ok})")


if __name__ == "__main__":
    sys.exit(main())
