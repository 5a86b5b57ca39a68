"""`peftflow`: run the pipeline, reproduce a tracked run, compare runs.

peftflow run CONFIG.yaml [--set key=value ...] [--baseline]
peftflow reproduce RUN_ID
peftflow compare [--experiment NAME]
peftflow retrain CONFIG.yaml [--set ...] [--policy key=value ...]
peftflow sweep CONFIG.yaml [--set ...] [--grid key=value ...]
peftflow notify-data CONFIG.yaml [--set ...]
peftflow serve [--prefect-port 4200] [--mlflow-port 5000] [--home .peftflow] [--no-schedules]
peftflow stop [--home .peftflow]
peftflow status [--home .peftflow]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, TypeVar, cast

from pydantic import BaseModel

_M = TypeVar("_M", bound=BaseModel)

for _key, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # The ephemeral Prefect server can take a while to start on a busy 2-core machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(_key, _value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peftflow", description="PEFT fine-tuning pipeline (Prefect + MLflow)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="run the fine-tuning flow on a YAML config", description="Run the finetune flow."
    )
    run.add_argument("config", help="path to a YAML config (see configs/)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter, e.g. --set peft.r=16 (repeatable)",
    )
    run.add_argument("--baseline", action="store_true", help="also evaluate the untrained adapter first")
    rep = sub.add_parser(
        "reproduce",
        help="re-run a tracked run and compare metrics and adapter checksum",
        description="Re-run a tracked run from its params.yaml and compare.",
    )
    rep.add_argument("run_id", help="MLflow run id")
    cmp_ = sub.add_parser(
        "compare", help="table of runs in an experiment", description="Compare tracked runs."
    )
    cmp_.add_argument("--experiment", default="peftflow", help="MLflow experiment name (default: peftflow)")
    for name, section, model_help in (
        ("retrain", "policy", "registered_model, metric, direction, min_delta, force"),
        ("sweep", "grid", "methods, ranks, learning_rates, metric, direction, max_trials"),
    ):
        what = {
            "retrain": "retrain: skip on unchanged data, else train and promote to `champion` only when better",
            "sweep": "sweep: one nested MLflow run per trial of a methods x ranks x learning rates grid",
        }[name]
        cmd = sub.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")
        cmd.add_argument("config", help="path to a YAML config (see configs/)")
        cmd.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        cmd.add_argument(
            f"--{section}",
            dest="section",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"{section} setting ({model_help}), e.g. --{section} "
            + ("metric=val_f1" if name == "retrain" else "ranks=[4,8]"),
        )
    notify = sub.add_parser(
        "notify-data",
        help="tell the Prefect server that a recipe's data changed (the retrain deployment reacts)",
        description="Fingerprint the recipe's data and emit a peftflow.data.changed event to the Prefect "
        "server at PREFECT_API_URL; the retrain deployment's trigger runs retrain on it (and skips when "
        "its last trained run used the same data).",
    )
    notify.add_argument("config", help="path to a YAML config (see configs/)")
    notify.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    home_help = "state directory: databases, artifacts, logs, pids (default: $PEFTFLOW_HOME or .peftflow)"
    home_default = os.environ.get("PEFTFLOW_HOME", ".peftflow")
    srv = sub.add_parser(
        "serve",
        help="start the Prefect and MLflow servers and serve the deployments (127.0.0.1)",
        description="Start the local stack: Prefect server + UI, MLflow server + UI, the deployments of "
        "infra/prefect.yaml. Returns once all three answer; `peftflow stop` stops them.",
    )
    srv.add_argument("--home", default=home_default, help=home_help)
    srv.add_argument("--prefect-port", type=int, default=int(os.environ.get("PEFTFLOW_PREFECT_PORT", 4200)))
    srv.add_argument("--mlflow-port", type=int, default=int(os.environ.get("PEFTFLOW_MLFLOW_PORT", 5000)))
    srv.add_argument("--spec", default=None, help="prefect.yaml with the deployments (default: infra/)")
    srv.add_argument("--no-schedules", action="store_true", help="serve without the cron schedules")
    srv.add_argument("--training-slots", type=int, default=1, help="trainings at once (default 1: one GPU)")
    srv.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for each server")
    for name, text in (("stop", "stop everything `serve` started"), ("status", "show the local stack")):
        cmd = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        cmd.add_argument("--home", default=home_default, help=home_help)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args.config, args.overrides, args.baseline)
        if args.command == "reproduce":
            return cmd_reproduce(args.run_id)
        if args.command == "compare":
            return cmd_compare(args.experiment)
        if args.command == "retrain":
            return cmd_retrain(args.config, args.overrides, args.section)
        if args.command == "sweep":
            return cmd_sweep(args.config, args.overrides, args.section)
        if args.command == "notify-data":
            return cmd_notify_data(args.config, args.overrides)
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "stop":
            return cmd_stop(args.home)
        return cmd_status(args.home)
    except (ValueError, FileNotFoundError, PermissionError, RuntimeError) as exc:
        print(f"peftflow: error: {exc}", file=sys.stderr)
        return 2


def cmd_run(config: str, overrides: list[str], baseline: bool) -> int:
    from flows.params import FinetuneParams

    try:
        params = FinetuneParams.from_yaml(config, overrides)
    except Exception as exc:  # pydantic's ValidationError names each bad field
        raise ValueError(f"invalid parameters in {config}:\n{_untagged(str(exc))}") from None
    from flows.finetune import finetune

    summary = finetune(params, baseline=baseline)
    _print_summary(summary)
    return 0


def _load(config: str, overrides: list[str], section: list[str], model: type[_M]) -> tuple[Any, _M]:
    from flows.params import FinetuneParams, apply_override

    settings: dict[str, Any] = {}
    try:
        params = FinetuneParams.from_yaml(config, overrides)
        for item in section:
            apply_override(settings, item)
        return params, model.model_validate(settings)
    except Exception as exc:  # pydantic's ValidationError names each bad field
        raise ValueError(f"invalid parameters:\n{_untagged(str(exc))}") from None


def cmd_retrain(config: str, overrides: list[str], policy_items: list[str]) -> int:
    from prefect.states import State

    from flows.params import PromotionParams
    from flows.retrain import check_policy, is_skipped, retrain

    params, policy = _load(config, overrides, policy_items, PromotionParams)
    check_policy(params, policy)
    state = cast(State, retrain(params, policy, return_state=True))
    if is_skipped(state):
        print(state.message)
        return 0
    result = state.result()  # raises the flow's error when it failed
    _print_summary(result)
    decision = result["decision"]
    print(f"registry        : {decision['registered_model']} v{decision['version']} — {decision['reason']}")
    return 0


def cmd_sweep(config: str, overrides: list[str], grid_items: list[str]) -> int:
    from flows.params import SweepGrid
    from flows.sweep import sweep

    params, grid = _load(config, overrides, grid_items, SweepGrid)
    summary = sweep(params, grid)
    metric = summary["metric"]
    print(f"\n{'trial':<24}{'trainable%':>11}{metric:>16}  status")
    for row in summary["trials"]:
        print(
            f"{row['run_name']:<24}{_fmt(row['trainable_percent']):>11}{_fmt(row[metric]):>16}  {row['status']}"
        )
    best = summary["best"]
    if best:
        print(
            f"best: {best['run_name']} ({metric} {_fmt(best[metric])}); MLflow parent run {summary['parent_run_id']}"
        )
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    from flows.tracking import tracking_uri

    print("\n=== peftflow run finished ===")
    print(f"MLflow run id   : {summary['run_id']}")
    print(f"adapter         : {summary['adapter_dir']}  (sha256 {summary['adapter_sha256'][:12]}…)")
    print(f"trainable       : {summary['trainable_percent']:.4f}% of parameters")
    print(f"train time      : {summary['train_runtime_s']:.1f}s")
    if summary.get("data_truncation"):
        print(f"over max_length : {summary['data_truncation']}")
    for name, value in sorted(summary.get("val_metrics", {}).items()):
        print(f"val {name:<12}: {value:.4f}   (validation: what selection reads)")
    for name, value in sorted(summary["metrics"].items()):
        before = summary["baseline_metrics"].get(name)
        extra = f"   (untrained: {before:.4f})" if before is not None else ""
        print(f"eval {name:<11}: {value:.4f}{extra}")
    if summary.get("hub_commit"):
        print(f"Hub commit      : {summary['hub_commit']}")
    uri = tracking_uri()
    if summary.get("mlflow_url"):
        print(f"MLflow UI       : {summary['mlflow_url']}")
    else:
        print(f"MLflow UI       : mlflow ui --backend-store-uri {uri}   (then open http://127.0.0.1:5000)")


def cmd_reproduce(run_id: str) -> int:
    import yaml

    from flows.finetune import finetune
    from flows.params import FinetuneParams
    from flows.tracking import RunTracker, check_reachable

    check_reachable()  # before MLflow's HTTP retries would stall on a server that is down
    original = RunTracker(run_id).summary()
    params = FinetuneParams.model_validate(yaml.safe_load(RunTracker(run_id).params_yaml()))
    params.tracking.tags = {**params.tracking.tags, "reproduces": run_id}
    params.tracking.run_name = f"reproduce-{original['name'] or run_id[:8]}"
    new = finetune(params)
    new_summary = RunTracker(new["run_id"]).summary()
    names = sorted(
        k
        for k in original["metrics"]
        if k.startswith(("eval_", "val_")) or k in ("train_loss", "trainable_params")
    )
    print(f"\n{'metric':<22}{'original':>14}{'reproduced':>14}  match")
    all_match = True
    for name in names:
        a, b = original["metrics"].get(name), new_summary["metrics"].get(name)
        same = a is not None and b is not None and abs(a - b) <= 1e-9 * max(1.0, abs(a))
        all_match &= same
        print(f"{name:<22}{_fmt(a):>14}{_fmt(b):>14}  {'yes' if same else 'NO'}")
    old_sum, new_sum = original["tags"].get("adapter.sha256"), new_summary["tags"].get("adapter.sha256")
    same_adapter = old_sum is not None and old_sum == new_sum
    print(
        f"{'adapter sha256':<22}{(old_sum or '-')[:12]:>14}{(new_sum or '-')[:12]:>14}  {'yes' if same_adapter else 'NO'}"
    )
    print(f"new run: {new['run_id']}")
    return 0 if (all_match and same_adapter) else 1


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def cmd_compare(experiment: str) -> int:
    from flows.tracking import check_reachable, search_runs

    check_reachable()
    runs = search_runs(experiment)
    if not runs:
        print(f"no runs in experiment {experiment!r}")
        return 0
    # Validation metrics (selection) then test metrics (the record), losses left to the run pages.
    eval_names = sorted(
        {
            k
            for r in runs
            for k in r["metrics"]
            if k.startswith(("val_", "eval_")) and not k.endswith("_loss")
        },
        key=lambda k: (not k.startswith("val_"), k),
    )
    header = ["run", "method", "size", "trainable%", *eval_names, "runtime_s", "adapter_kb"]
    rows = []
    for r in runs:
        m, p = r["metrics"], r["params"]
        rows.append(
            [
                (r["name"] or r["run_id"][:8])[:24],
                _method_label(p),
                next((p[k] for k in _SIZE_KEYS if p.get(k) not in (None, "None")), "-"),
                _fmt(m.get("trainable_percent")),
                *(_fmt(m.get(n)) for n in eval_names),
                _fmt(m.get("train_runtime_s")),
                _fmt(m["adapter_size_bytes"] / 1024) if "adapter_size_bytes" in m else "-",
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for line in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)))
    return 0


def cmd_notify_data(config: str, overrides: list[str]) -> int:
    from flows.params import FinetuneParams

    try:
        params = FinetuneParams.from_yaml(config, overrides)
    except Exception as exc:  # pydantic's ValidationError names each bad field
        raise ValueError(f"invalid parameters in {config}:\n{exc}") from None
    from flows.events import notify_data

    event = notify_data(params)
    print(f"sent {event.event} {event.id}")
    print(f"  resource    : {event.resource.id}  ({event.resource.name})")
    print(f"  fingerprint : {event.payload['fingerprint']}")
    return 0


def _untagged(message: str) -> str:
    """pydantic's locations without the method tag it adds inside `peft` (`peft.lora.r` → `peft.r`)."""
    from flows.peft_params import METHOD_CLASSES

    tags = "|".join(METHOD_CLASSES)
    return re.sub(rf"^peft\.({tags})(?=\.|$)", "peft", message, flags=re.M)


# The size knob each method logs: rank (LoRA, LoHa, LoKr), target rank (AdaLoRA), virtual tokens.
_SIZE_KEYS = ("peft.r", "peft.target_r", "peft.num_virtual_tokens")


def _method_label(params: dict[str, Any]) -> str:
    """peft.method, with the LoRA variant when one is on (`lora+dora`, `lora+rslora`)."""
    method = str(params.get("peft.method", "-"))
    variants = [v for v in ("dora", "rslora") if str(params.get(f"peft.use_{v}", "")).lower() == "true"]
    return "+".join([method, *variants])


def cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from flows.stack import serve

    for port, flag in ((args.prefect_port, "--prefect-port"), (args.mlflow_port, "--mlflow-port")):
        if not 1 <= port <= 65535:
            raise ValueError(f"{flag}={port}: a port is 1-65535")
    if args.prefect_port == args.mlflow_port:
        raise ValueError("--prefect-port and --mlflow-port must differ")
    if args.training_slots < 1:
        raise ValueError("--training-slots must be >= 1")
    stack = serve.Stack(Path(args.home), args.prefect_port, args.mlflow_port)
    spec = Path(args.spec) if args.spec else serve.DEFAULT_SPEC
    print(f"starting MLflow and Prefect servers on 127.0.0.1 (state in {args.home}/) ...", flush=True)
    state = serve.start(
        stack,
        spec,
        schedules=not args.no_schedules,
        training_slots=args.training_slots,
        timeout_s=args.timeout,
    )
    env = stack.client_env()
    print(f"Prefect UI : {state['prefect_url']}   deployments: {', '.join(serve.deployment_names(spec))}")
    print(f"MLflow UI  : {state['mlflow_url']}")
    print(f"state/logs : {args.home}/  ({args.home}/logs/*.log)")
    print("point the CLI at them:")
    print("  export " + " ".join(f"{k}={v}" for k, v in env.items()))
    print("stop with  : make stop   (or peftflow stop)")
    return 0


def cmd_stop(home: str) -> int:
    from pathlib import Path

    from flows.stack import serve

    stopped = serve.stop(Path(home))
    print("stopped: " + ", ".join(stopped) if stopped else f"nothing is running from {home}")
    return 0


def cmd_status(home: str) -> int:
    from pathlib import Path

    from flows.stack import serve

    state = serve.status(Path(home))
    if state is None:
        print(f"not running (no {home}/state.json)")
        return 1
    for name, alive in state["alive"].items():
        print(f"{name:<12} pid {state['processes'][name]['pid']:<8} {'running' if alive else 'EXITED'}")
    print(f"Prefect UI : {state['prefect_url']}\nMLflow UI  : {state['mlflow_url']}")
    return 0 if all(state["alive"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
