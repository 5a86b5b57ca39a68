"""`peftflow` (flows.cli): run, reproduce and compare against a real MLflow store and Prefect server.

One module fixture runs the CLI three times on a tiny classifier: a run from the config, a run with
`--set peft.r=2`, and `reproduce` of the first. The tests read what was printed and what was tracked.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from flows.cli import main
from tests.flows import fixtures
from tests.flows.conftest import use_mlflow_store

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = "cli-test"


def _write_config(root: Path) -> Path:
    config = {
        "model": {"name_or_path": fixtures.model_dir(root / "models", "seq_cls"), "task": "seq_cls"},
        "data": {
            "train_file": fixtures.write_jsonl(root / "train.jsonl", fixtures.rows("seq_cls", 16)),
            "test_file": fixtures.write_jsonl(root / "test.jsonl", fixtures.rows("seq_cls", 6)),
            "validation_fraction": 0.25,
        },
        "peft": {"r": 4},
        "train": {"max_steps": 4, "batch_size": 4, "learning_rate": 5e-3, "logging_steps": 1},
        "eval": {"metrics": ["accuracy", "f1"]},
        "tracking": {"experiment": EXPERIMENT},
        "output_dir": str(root / "out"),
    }
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _main(*argv: str) -> tuple[int, str, str]:
    """`main(argv)` with its stdout and stderr captured: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _value(text: str) -> object:
    """A logged param as a value: numbers as floats, anything else as the text."""
    try:
        return float(text)
    except ValueError:
        return text


def _run_id(stdout: str) -> str:
    match = re.search(r"^MLflow run id\s*: ([0-9a-f]{32})$", stdout, re.M)
    assert match, stdout
    return match.group(1)


@pytest.fixture(scope="module")
def cli(
    prefect_harness: None, tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path
) -> Iterator[SimpleNamespace]:
    """Two `peftflow run`s and one `peftflow reproduce`, tracked to one SQLite store."""
    root = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp:
        client = use_mlflow_store(mp, root, mlflow_template)
        config = _write_config(root)
        first = _main("run", str(config))
        second = _main("run", str(config), "--set", "peft.r=2", "--set", "tracking.run_name=rank-2")
        assert first[0] == 0 and second[0] == 0, (first[2][-3000:], second[2][-3000:])
        first_id, second_id = _run_id(first[1]), _run_id(second[1])
        reproduced = _main("reproduce", first_id)
        yield SimpleNamespace(
            client=client,
            root=root,
            config=config,
            first=first,
            first_id=first_id,
            second_id=second_id,
            reproduced=reproduced,
        )


@pytest.mark.slow
def test_run_prints_the_run_id_metrics_and_how_to_open_the_ui(cli: SimpleNamespace) -> None:
    code, stdout, _ = cli.first
    run = cli.client.get_run(cli.first_id)
    assert code == 0 and run.info.status == "FINISHED"
    for name in ("accuracy", "f1"):
        value = run.data.metrics[f"eval_{name}"]
        assert re.search(rf"^eval {name}\s*: {value:.4f}$", stdout, re.M), stdout
        value = run.data.metrics[f"val_{name}"]
        assert re.search(rf"^val {name}\s*: {value:.4f}   \(validation", stdout, re.M), stdout
    assert re.search(r"^over max_length : train 0 truncated, 0 dropped; validation 0", stdout, re.M), stdout
    assert f"{run.data.metrics['trainable_percent']:.4f}% of parameters" in stdout
    assert run.data.tags["adapter.sha256"][:12] in stdout
    uri = f"sqlite:///{cli.root / 'mlflow.db'}"
    assert f"mlflow ui --backend-store-uri {uri}" in stdout


@pytest.mark.slow
def test_set_overrides_reach_the_tracked_run(cli: SimpleNamespace) -> None:
    run = cli.client.get_run(cli.second_id)
    assert run.data.params["peft.r"] == "2" and run.data.params["peft_config.r"] == "2"
    assert run.info.run_name == "rank-2"
    first = cli.client.get_run(cli.first_id)
    assert run.data.metrics["trainable_params"] < first.data.metrics["trainable_params"]


@pytest.mark.slow
def test_reproduce_matches_metrics_and_adapter_checksum_on_cpu(cli: SimpleNamespace) -> None:
    code, stdout, stderr = cli.reproduced
    assert code == 0, stdout + stderr[-3000:]
    new_id = re.search(r"^new run: ([0-9a-f]{32})$", stdout, re.M)
    assert new_id, stdout
    original, new = cli.client.get_run(cli.first_id), cli.client.get_run(new_id.group(1))
    assert new.data.tags["reproduces"] == cli.first_id
    assert new.info.run_name == f"reproduce-{original.info.run_name}"
    # The same parameters, but for the reproduction's own tracking tags and run name. Values are
    # compared as values: a default left unvalidated (lora_alpha=16, an int in a float field) is
    # logged "16" by the first run and "16.0" once params.yaml has been parsed back.
    expected = {
        k: v for k, v in original.data.params.items() if k not in ("tracking.tags", "tracking.run_name")
    }
    expected |= {"tracking.tags.reproduces": cli.first_id, "tracking.run_name": new.info.run_name}
    assert {k: _value(v) for k, v in new.data.params.items()} == {k: _value(v) for k, v in expected.items()}
    checksum = original.data.tags["adapter.sha256"]
    assert new.data.tags["adapter.sha256"] == checksum
    assert re.search(rf"^adapter sha256\s+{checksum[:12]}\s+{checksum[:12]}\s+yes$", stdout, re.M), stdout
    for name in ("eval_accuracy", "eval_f1", "val_accuracy", "val_loss", "train_loss", "trainable_params"):
        assert new.data.metrics[name] == original.data.metrics[name]
        assert re.search(rf"^{name}\s+\S+\s+\S+\s+yes$", stdout, re.M), stdout
    assert " NO" not in stdout


@pytest.mark.slow
def test_compare_prints_one_row_per_run(cli: SimpleNamespace) -> None:
    code, stdout, _ = _main("compare", "--experiment", EXPERIMENT)
    assert code == 0
    header, *rows = [line.split() for line in stdout.strip().splitlines()]
    assert header == [
        "run",
        "method",
        "size",  # the method's size knob: r for LoRA (target_r for AdaLoRA, virtual tokens for prompts)
        "trainable%",
        "val_accuracy",
        "val_f1",
        "eval_accuracy",
        "eval_f1",
        "runtime_s",
        "adapter_kb",
    ]
    experiment = cli.client.get_experiment_by_name(EXPERIMENT)
    runs = cli.client.search_runs([experiment.experiment_id])
    assert len(rows) == len(runs) == 3
    for row in rows:
        (run,) = [r for r in runs if r.info.run_name[:24] == row[0]]  # compare cuts names at 24 chars
        m = run.data.metrics
        assert row[1:4] == ["lora", run.data.params["peft.r"], f"{m['trainable_percent']:.6g}"]
        assert row[4:] == [
            f"{m['val_accuracy']:.6g}",
            f"{m['val_f1']:.6g}",
            f"{m['eval_accuracy']:.6g}",
            f"{m['eval_f1']:.6g}",
            f"{m['train_runtime_s']:.6g}",
            f"{m['adapter_size_bytes'] / 1024:.6g}",
        ]
    assert sorted(row[2] for row in rows) == ["2", "4", "4"]


@pytest.mark.slow
def test_reproduce_and_compare_name_what_is_missing(cli: SimpleNamespace) -> None:
    code, _, stderr = _main("reproduce", "0" * 32)
    assert code == 2 and f"peftflow: error: MLflow run '{'0' * 32}' not found" in stderr
    code, _, stderr = _main("compare", "--experiment", "no-such-experiment")
    assert code == 2 and "MLflow experiment 'no-such-experiment' does not exist" in stderr


@pytest.mark.slow
def test_bad_data_exits_2_with_the_error_and_no_run(cli: SimpleNamespace) -> None:
    before = len(cli.client.search_runs([cli.client.get_experiment_by_name(EXPERIMENT).experiment_id]))
    code, _, stderr = _main("run", str(cli.config), "--set", "data.text_column=review")
    assert code == 2
    assert "peftflow: error: data.text_column='review' is not a column of the train split" in stderr
    assert (
        len(cli.client.search_runs([cli.client.get_experiment_by_name(EXPERIMENT).experiment_id])) == before
    )


@pytest.mark.parametrize(
    ("override", "field", "problem"),
    [
        ("peft.r=0", "peft.r", "greater than 0"),
        ("train.eval_every=sometimes", "train.eval_every", "'epoch', 'steps' or 'no'"),
        ("peft.rank=8", "peft.rank", "Extra inputs are not permitted"),
    ],
)
def test_invalid_parameter_exits_2_naming_the_field(
    override: str, field: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump({"data": {"train_file": str(tmp_path / "train.jsonl")}, "output_dir": str(tmp_path)})
    )
    assert main(["run", str(config), "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"peftflow: error: invalid parameters in {config}")
    assert re.search(rf"^{re.escape(field)}\n\s+.*{re.escape(problem)}", err, re.M), err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


def test_malformed_override_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": {"train_file": str(tmp_path / "train.jsonl")}}))
    assert main(["run", str(config), "--set", "peft.r"]) == 2
    assert "override 'peft.r' must look like key.sub=value" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ["run", "reproduce", "compare", "retrain", "sweep", "serve", "stop", "status"]),
        (["run"], ["config", "--set KEY=VALUE", "--baseline"]),
        (["retrain"], ["config", "--policy KEY=VALUE"]),
        (["sweep"], ["config", "--grid KEY=VALUE"]),
        (["serve"], ["--prefect-port", "--mlflow-port", "--home", "--no-schedules", "--training-slots"]),
        (["stop"], ["--home"]),
        (["reproduce"], ["run_id"]),
        (["compare"], ["--experiment"]),
    ],
)
def test_help_works_for_every_command(argv: list[str], expected: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", *argv, "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: peftflow {' '.join(argv)}".rstrip())
    for text in expected:
        assert text in result.stdout


@pytest.mark.slow
def test_retrain_trains_then_skips_and_sweep_prints_the_comparison(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_template: Path
) -> None:
    client = use_mlflow_store(monkeypatch, tmp_path, mlflow_template)
    config = str(_write_config(tmp_path))
    code, out, err = _main("retrain", config, "--policy", "registered_model=cli-model")
    assert code == 0, err[-3000:]
    assert re.search(r"^registry\s+: cli-model v1 — first version: no champion yet$", out, re.M), out
    assert {k: str(v) for k, v in client.get_registered_model("cli-model").aliases.items()} == {
        "champion": "1"
    }
    code, out, _ = _main("retrain", config, "--policy", "registered_model=cli-model")
    assert code == 0 and out.startswith("Skipped: data and recipe unchanged since run "), out

    code, out, err = _main(
        "sweep", config, "--set", "train.max_steps=2", "--grid", "methods=[lora]", "--grid", "ranks=[2,4]"
    )
    assert code == 0, err[-3000:]
    assert re.search(r"^r2-lora-lr0\.003 .* FINISHED$", out, re.M) and re.search(
        r"^r4-lora-lr0\.003 ", out, re.M
    )
    assert re.search(
        r"^best: r[24]-lora-lr0\.003 \(val_accuracy [0-9.]+\); MLflow parent run [0-9a-f]{32}$", out, re.M
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sweep", "--grid", "ranks=[4,4]"], "repeats a value"),
        (["sweep", "--grid", "ranks=[0]"], "every rank must be > 0"),
        (["retrain", "--policy", "direction=up"], "'maximize' or 'minimize'"),
        (["retrain", "--policy", "metric=val_bleu"], "is not logged by this run"),
        (
            ["retrain", "--policy", "metric=eval_accuracy"],
            "is a test metric; the champion is chosen on the validation split, so use 'val_accuracy'",
        ),
    ],
)
def test_retrain_and_sweep_reject_bad_settings_before_any_work(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"train_file": str(tmp_path / "t.jsonl"), "validation_fraction": 0.5},
                "output_dir": str(tmp_path / "o"),
            }
        )
    )
    (tmp_path / "t.jsonl").write_text('{"text": "a", "label": "x"}\n')
    assert main([argv[0], str(config), *argv[1:]]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prefect-port", "0"], "--prefect-port=0: a port is 1-65535"),
        (["--prefect-port", "4300", "--mlflow-port", "4300"], "must differ"),
        (["--training-slots", "0"], "--training-slots must be >= 1"),
    ],
)
def test_serve_rejects_bad_options(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--home", str(tmp_path / "home"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "home").exists()


def test_serve_refuses_a_taken_port_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(
            ["serve", "--home", str(tmp_path), "--prefect-port", str(port), "--mlflow-port", str(port + 1)]
        )
    assert code == 2
    assert f"port {port} on 127.0.0.1 is already in use" in capsys.readouterr().err
    assert not (tmp_path / "state.json").exists() and not (tmp_path / "logs").exists()


def test_stop_and_status_without_a_stack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stop", "--home", str(tmp_path)]) == 0
    assert "nothing is running" in capsys.readouterr().out
    assert main(["status", "--home", str(tmp_path)]) == 1
    assert "not running" in capsys.readouterr().out
    assert main(["stop", "--home", str(tmp_path / "never-made")]) == 0
    assert not (tmp_path / "never-made").exists()
