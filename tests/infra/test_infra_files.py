"""The team and cluster files of infra/, checked against the tools that read them, without servers.

Docker and Kubernetes are not needed: compose.yaml is interpolated the way Compose does it, the
MLflow server's command is parsed by MLflow's own click command, the Kubernetes work-pool template is
rendered with Prefect's templating and validated with Prefect's job-variable validation, and the
deployments of prefect.yaml are loaded and validated as `prefect deploy` does it.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH_STRING|ACCESS_KEY")
SECRETS_FOR_TESTS = "test-secret-0123456789"


# --- Compose variable interpolation (the subset Compose documents: $$, $VAR, ${VAR}, :- - :? ? :+ +) --


class MissingVariable(ValueError):
    pass


def _closing_brace(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise ValueError(f"unclosed '${{' in {text!r}")


def interpolate(text: str, env: dict[str, str], used: set[str]) -> str:
    """Resolve Compose's `${...}` syntax in `text` with `env`; records every variable name in `used`."""
    out, i = [], 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 1)
            out.append(_braced(text[i + 2 : end], env, used))
            i = end + 1
        elif m := re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[i + 1 :]):
            used.add(m.group())
            out.append(env.get(m.group(), ""))
            i += 1 + m.end()
        else:
            raise ValueError(f"a lone '$' in {text!r}: write '$$'")
    return "".join(out)


def _braced(inner: str, env: dict[str, str], used: set[str]) -> str:
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?(.*)$", inner, re.S)
    assert m, f"bad variable reference ${{{inner}}}"
    name, op, arg = m.group(1), m.group(2), m.group(3)
    used.add(name)
    arg = interpolate(arg, env, used)
    is_set = name in env and (env[name] != "" or not (op or "").startswith(":"))
    if op is None:
        assert arg == "", f"bad variable reference ${{{inner}}}"
        return env.get(name, "")
    if op.endswith("-"):
        return env[name] if is_set else arg
    if op.endswith("?"):
        if not is_set:
            raise MissingVariable(f"{name}: {arg}")
        return env[name]
    return arg if is_set else ""  # + and :+


def resolve(node: Any, env: dict[str, str], used: set[str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env, used)
    if isinstance(node, dict):
        return {k: resolve(v, env, used) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, env, used) for v in node]
    return node


def read_env_file(path: Path) -> tuple[dict[str, str], set[str]]:
    """`NAME=value` lines as a dict, and the names of `# NAME=default` lines (documented, unset)."""
    values, commented = {}, set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line.strip()):
            values[m.group(1)] = m.group(2)
        elif m := re.fullmatch(r"#\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip()):
            commented.add(m.group(1))
    return values, commented


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_raw() -> dict[str, Any]:
    return yaml.safe_load((INFRA / "compose.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def env_example() -> tuple[dict[str, str], set[str]]:
    return read_env_file(INFRA / ".env.example")


@pytest.fixture(scope="module")
def compose(compose_raw: dict[str, Any], env_example: tuple[dict[str, str], set[str]]) -> dict[str, Any]:
    """compose.yaml as Compose sees it with .env.example filled in (secrets replaced by a test value)."""
    values, _ = env_example
    env = {k: v or SECRETS_FOR_TESTS for k, v in values.items()}
    return resolve(compose_raw, env, set())


@pytest.fixture(scope="module")
def prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load((INFRA / "prefect.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def k8s_template() -> dict[str, Any]:
    return json.loads((INFRA / "k8s" / "gpu-work-pool.json").read_text(encoding="utf-8"))


def init_sql() -> tuple[set[str], dict[str, str], set[str]]:
    """Roles, databases (name -> owner) and \\getenv'd variables of postgres/init.sql."""
    text = (INFRA / "postgres" / "init.sql").read_text(encoding="utf-8")
    roles = set(re.findall(r"^CREATE ROLE (\w+) LOGIN", text, re.M))
    dbs = dict(re.findall(r"^CREATE DATABASE (\w+) OWNER (\w+);", text, re.M))
    env = set(re.findall(r"^\\getenv \w+ (\w+)$", text, re.M))
    return roles, dbs, env


def worker_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if "worker" in s.get("command", [])}


def option(args: list[str], flag: str) -> str:
    for i, arg in enumerate(args):
        if arg == flag:
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {args}")


# --- compose.yaml --------------------------------------------------------------------------------------


def test_compose_dependencies_exist_and_are_ready(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert not services[dep].get("profiles") or service.get("profiles"), f"{name} → profiled {dep}"
            condition = spec["condition"]
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}, which has no healthcheck"


def test_every_compose_variable_is_documented(
    compose_raw: dict[str, Any], env_example: tuple[dict[str, str], set[str]]
) -> None:
    values, commented = env_example
    documented = set(values) | commented
    used: set[str] = set()
    resolve(compose_raw, {k: v or SECRETS_FOR_TESTS for k, v in values.items()}, used)
    lines = (INFRA / "compose.yaml").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    assert used == set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text.replace("$$", "")))
    assert used <= documented, f"undocumented in .env.example: {sorted(used - documented)}"


def test_env_example_holds_no_secret_and_requires_every_required_one(
    compose_raw: dict[str, Any], env_example: tuple[dict[str, str], set[str]]
) -> None:
    values, _ = env_example
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?", (INFRA / "compose.yaml").read_text()))
    assert {"POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "PREFECT_AUTH_STRING"} <= required
    for name in required:
        assert values.get(name) is not None, f"{name} is required: list it uncommented in .env.example"
        if SECRET_NAME.search(name):
            assert values[name] == "", f".env.example must not hold a value for {name}"
    for name, value in values.items():
        assert not SECRET_NAME.search(name) or value == "", f".env.example holds a value for {name}"
    # A copy of .env.example as is: Compose stops, naming a secret to fill in.
    with pytest.raises(MissingVariable) as missing:
        resolve(compose_raw, {k: v for k, v in values.items() if v}, set())
    assert str(missing.value).split(":")[0] in required


def test_published_ports_bind_to_loopback(compose: dict[str, Any]) -> None:
    published = {n: s["ports"] for n, s in compose["services"].items() if s.get("ports")}
    assert {"prefect-server", "mlflow"} <= set(published)
    assert "postgres" not in published
    for name, ports in published.items():
        for port in ports:
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port}"


def test_database_urls_use_roles_and_databases_of_init_sql(compose: dict[str, Any]) -> None:
    from sqlalchemy.engine import make_url

    roles, dbs, init_env = init_sql()
    services = compose["services"]
    mlflow_cmd = services["mlflow"]["command"]
    auth = configparser.ConfigParser()
    auth.read_string(compose["configs"]["mlflow_basic_auth"]["content"])
    urls = {
        "postgresql+psycopg2": [option(mlflow_cmd, "--backend-store-uri"), auth["mlflow"]["database_uri"]],
        "postgresql+asyncpg": [
            services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
        ],
    }
    for driver, driver_urls in urls.items():
        for raw in driver_urls:
            url = make_url(raw)
            assert url.drivername == driver and url.host == "postgres" and url.port == 5432
            assert url.username in roles and dbs.get(url.database) == url.username, raw
    assert init_env <= set(services["postgres"]["environment"]), "init.sql reads variables postgres lacks"
    assert set(dbs) == {"prefect", "mlflow", "mlflow_auth"}


def test_mlflow_command_parses_with_mlflow_server_cli(compose: dict[str, Any]) -> None:
    import click
    from mlflow.cli import server

    service = compose["services"]["mlflow"]
    assert service["command"][:2] == ["mlflow", "server"]
    args = service["command"][2:]
    ctx = server.make_context("server", list(args))  # raises click.UsageError on a flag it does not take
    assert isinstance(ctx, click.Context)
    assert ctx.params["app_name"] == "basic-auth" and ctx.params["serve_artifacts"] is True
    assert ctx.params["artifacts_destination"] == "s3://mlflow/"
    assert ctx.params["backend_store_uri"].startswith("postgresql+psycopg2://")
    # The worker's tracking URI must pass MLflow's Host-header check.
    worker = next(iter(worker_services(compose).values()))
    host = worker["environment"]["MLFLOW_TRACKING_URI"].removeprefix("http://")
    assert host in ctx.params["allowed_hosts"].split(",")
    env = service["environment"]
    assert {"MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "PGPASSWORD"} <= set(env)
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == service["configs"][0]["target"]
    auth = configparser.ConfigParser()
    auth.read_string(compose["configs"][service["configs"][0]["source"]]["content"])
    assert {"default_permission", "database_uri", "authorization_function"} <= set(auth["mlflow"])


def test_workers_serve_the_pool_of_prefect_yaml(
    compose: dict[str, Any], prefect_yaml: dict[str, Any]
) -> None:
    workers = worker_services(compose)
    assert set(workers) == {"worker", "worker-gpu"}
    pools = {d["work_pool"]["name"] for d in prefect_yaml["deployments"]}
    for name, service in workers.items():
        cmd = service["command"]
        assert cmd[:3] == ["prefect", "worker", "start"] and option(cmd, "--type") == "process"
        assert {option(cmd, "--pool")} == pools, name
        env = service["environment"]
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["PREFECT_API_AUTH_STRING"] == SECRETS_FOR_TESTS
        # Artifacts go through the MLflow server: no object-store credentials on the worker.
        assert not any(k.startswith("AWS_") for k in env), name
    (device,) = workers["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    cpu, gpu = (workers[n]["build"]["args"]["TORCH_INDEX_URL"] for n in ("worker", "worker-gpu"))
    assert cpu.endswith("/cpu") and gpu != cpu


# --- Dockerfile and .dockerignore -------------------------------------------------------------------------


def dockerfile_stages() -> dict[str, list[str]]:
    text = (INFRA / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    stages: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if m := re.match(r"FROM \S+ AS (\w+)$", line):
            current = m.group(1)
            stages[current] = [line]
        else:
            stages[current].append(line)
    return stages


def dockerignored(path: str) -> bool:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()]
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in (p for p in patterns if p and not p.startswith("#")):
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if any(fnmatch(prefix, pattern) for prefix in prefixes):
            excluded = not negated
    return excluded


def test_dockerfile_pins_torch_and_uses_constraints(prefect_yaml: dict[str, Any]) -> None:
    stages = dockerfile_stages()
    assert {"base", "mlflow", "worker"} <= set(stages)
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M))
    worker = "\n".join(stages["worker"])
    assert f"ARG TORCH_VERSION={pins['torch']}" in worker and '"torch==${TORCH_VERSION}"' in worker
    assert '".[pipeline,qlora]"' in worker and "WORKDIR /opt/peftflow" in worker and "ENV HF_HOME=" in worker
    (pull,) = prefect_yaml["pull"]
    assert pull["prefect.deployments.steps.set_working_directory"]["directory"] == "/opt/peftflow"
    mlflow = "\n".join(stages["mlflow"])
    assert f"ARG MLFLOW_VERSION={pins['mlflow']}" in mlflow and "mlflow[auth]" in mlflow
    assert "psycopg2" in mlflow and "boto3" in mlflow  # the backend store's driver, the S3 client
    for name, lines in stages.items():
        for line in lines:
            if "pip install" in line:
                assert re.search(r"-c \S*constraints\.txt", line), f"{name}: pip install without -c: {line}"
        users = [line.split()[1] for line in lines if line.startswith("USER ")]
        if name in ("mlflow", "worker"):
            assert users and users[-1] not in ("root", "0"), f"stage {name} runs as root"


def test_compose_builds_existing_stages_from_a_context_that_holds_what_they_copy(
    compose: dict[str, Any],
) -> None:
    stages = dockerfile_stages()
    for name, service in compose["services"].items():
        if build := service.get("build"):
            assert (INFRA / build["context"] / build["dockerfile"]).resolve() == INFRA / "Dockerfile", name
            assert build["target"] in stages, name
    for lines in stages.values():
        for line in lines:
            if line.startswith("COPY ") and "--from" not in line:
                for source in line.split()[1:-1]:
                    assert (ROOT / source).exists(), source
                    assert not dockerignored(source), f".dockerignore leaves out {source}"
    for private in (
        "infra/.env",
        ".venv/bin/python",
        "mlflow.db",
        "outputs/x",
        ".peftflow/state.json",
        ".git/HEAD",
    ):
        assert dockerignored(private), private
    assert dockerignored("flows/__pycache__/x.pyc")


# --- Kubernetes work-pool template ---------------------------------------------------------------------


def render(template: dict[str, Any], job_variables: dict[str, Any]) -> dict[str, Any]:
    """The job configuration as a worker renders it: variable defaults, overridden by job variables."""
    from prefect.utilities.templating import apply_values

    props = template["variables"]["properties"]
    values = {k: v["default"] for k, v in props.items() if "default" in v}
    return apply_values(template["job_configuration"], {**values, **job_variables})


def test_k8s_template_placeholders_are_declared_variables(k8s_template: dict[str, Any]) -> None:
    from prefect.utilities.schema_tools.validation import is_valid_schema
    from prefect.utilities.templating import find_placeholders

    assert set(k8s_template) == {"job_configuration", "variables"}
    is_valid_schema(k8s_template["variables"], preprocess=False)
    used = {p.name for p in find_placeholders(k8s_template["job_configuration"])}
    declared = set(k8s_template["variables"]["properties"])
    assert used <= declared, f"undeclared: {used - declared}"
    assert declared <= used, f"declared but never used: {declared - used}"


def test_k8s_job_requests_gpus_and_takes_secrets_from_a_secret(
    k8s_template: dict[str, Any], prefect_yaml: dict[str, Any]
) -> None:
    job_variables = prefect_yaml["deployments"][0]["work_pool"]["job_variables"]
    config = render(k8s_template, job_variables)
    manifest = config["job_manifest"]
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
    pod = manifest["spec"]["template"]["spec"]
    # What prefect-kubernetes requires of a job manifest.
    assert (pod["parallelism"], pod["completions"], pod["restartPolicy"]) == (1, 1, "Never")
    (container,) = pod["containers"]
    assert container["name"] == "prefect-job" and container["image"] == job_variables["image"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == job_variables["gpu_count"] == 1
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    (shm,) = (v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http")
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "HF_TOKEN"):
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"], name
    for entry in container["env"]:
        assert "value" not in entry or not SECRET_NAME.search(entry["name"]), entry
    assert "default" not in k8s_template["variables"]["properties"]["env"]
    four = render(k8s_template, {**job_variables, "gpu_count": 4})
    assert (
        four["job_manifest"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][
            "nvidia.com/gpu"
        ]
        == 4
    )


def test_k8s_runs_keep_their_output_dir_on_a_persistent_volume(
    k8s_template: dict[str, Any], prefect_yaml: dict[str, Any]
) -> None:
    """An evicted pod's rerun resumes only if output_dir (checkpoints) outlives the pod: every
    deployment's output_dir, resolved against the pull step's working directory, is on the claim."""
    config = render(k8s_template, prefect_yaml["deployments"][0]["work_pool"]["job_variables"])
    pod = config["job_manifest"]["spec"]["template"]["spec"]
    (volume,) = (v for v in pod["volumes"] if v["name"] == "outputs")
    (mount,) = (m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "outputs")
    claim = yaml.safe_load((ROOT / "infra" / "k8s" / "outputs-pvc.yaml").read_text(encoding="utf-8"))
    assert (claim["apiVersion"], claim["kind"]) == ("v1", "PersistentVolumeClaim")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    defaults = k8s_template["variables"]["properties"]
    assert claim["metadata"]["namespace"] == defaults["namespace"]["default"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    (pull,) = prefect_yaml["pull"]
    workdir = pull["prefect.deployments.steps.set_working_directory"]["directory"]
    for deployment in prefect_yaml["deployments"]:
        output_dir = os.path.normpath(os.path.join(workdir, deployment["parameters"]["params"]["output_dir"]))
        assert os.path.commonpath([output_dir, mount["mountPath"]]) == mount["mountPath"], deployment["name"]
    # The pod's user owns what it writes there (fsGroup), and a per-run override moves the mount.
    assert pod["securityContext"]["fsGroup"] == 10001
    moved = render(k8s_template, {"output_volume_claim": "team-a", "output_mount_path": "/data"})
    moved_pod = moved["job_manifest"]["spec"]["template"]["spec"]
    assert {"name": "outputs", "persistentVolumeClaim": {"claimName": "team-a"}} in moved_pod["volumes"]
    assert {"name": "outputs", "mountPath": "/data"} in moved_pod["containers"][0]["volumeMounts"]


def test_deployment_job_variables_fit_both_kinds_of_pool(
    k8s_template: dict[str, Any], prefect_yaml: dict[str, Any]
) -> None:
    from prefect.utilities.schema_tools import ValidationError, validate
    from prefect.workers.process import ProcessWorker

    process_template = ProcessWorker.get_default_base_job_template()
    for deployment in prefect_yaml["deployments"]:
        job_variables = deployment["work_pool"]["job_variables"]
        # As the Prefect API validates a deployment's job variables against its pool's template.
        for template in (k8s_template, process_template):
            validate(job_variables, template["variables"], raise_on_error=True, ignore_required=True)
    with pytest.raises(ValidationError):
        validate({"gpu_count": "two"}, k8s_template["variables"], raise_on_error=True, ignore_required=True)


# --- prefect.yaml ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment_flows(prefect_yaml: dict[str, Any]) -> dict[str, Any]:
    """Each deployment's flow, loaded from its entrypoint as `prefect deploy` does (from the repo root)."""
    from prefect.flows import load_flow_from_entrypoint

    # use_placeholder_flow=False: an entrypoint that fails to import fails here, not later on a worker.
    with contextlib.chdir(ROOT):
        return {
            d["name"]: load_flow_from_entrypoint(d["entrypoint"], use_placeholder_flow=False)
            for d in prefect_yaml["deployments"]
        }


def test_prefect_yaml_is_a_valid_deploy_file(prefect_yaml: dict[str, Any]) -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(prefect_yaml)
    assert [d.name for d in model.deployments] == ["finetune", "retrain", "sweep"]
    for deployment in model.deployments:
        assert deployment.work_pool is not None and deployment.work_pool.name == "peftflow-gpu"


def test_entrypoints_are_flows_and_parameters_validate(
    prefect_yaml: dict[str, Any], deployment_flows: dict[str, Any]
) -> None:
    from prefect import Flow
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import ValidationError, validate

    from flows.params import FinetuneParams, PromotionParams, SweepGrid

    models = {"params": FinetuneParams, "policy": PromotionParams, "grid": SweepGrid}
    for deployment in prefect_yaml["deployments"]:
        flow, parameters = deployment_flows[deployment["name"]], deployment["parameters"]
        assert isinstance(flow, Flow), deployment["entrypoint"]
        schema = parameter_schema(flow)
        assert set(schema.required or []) <= set(parameters) <= set(schema.properties)
        # The server's check (enforce_parameter_schema), then the flow's own pydantic validation.
        validate(parameters, schema.model_dump_for_openapi(), raise_on_error=True)
        coerced = flow.validate_parameters(parameters)
        for name, value in parameters.items():
            if name in models:
                assert coerced[name] == models[name].model_validate(value), (deployment["name"], name)
        broken = json.loads(json.dumps(parameters))
        broken["params"]["train"]["learning_rate"] = "fast"
        with pytest.raises(ValidationError):
            validate(broken, schema.model_dump_for_openapi(), raise_on_error=True)


def test_deployment_params_are_the_quickstart_config(prefect_yaml: dict[str, Any]) -> None:
    quickstart = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text(encoding="utf-8"))
    for deployment in prefect_yaml["deployments"]:
        assert deployment["parameters"]["params"] == quickstart, deployment["name"]


def test_schedules_and_concurrency_limits_are_well_formed(prefect_yaml: dict[str, Any]) -> None:
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.client.schemas.schedules import CronSchedule

    by_name = {d["name"]: d for d in prefect_yaml["deployments"]}
    assert by_name["retrain"]["schedules"], "retrain runs nightly"
    for deployment in by_name.values():
        for schedule in deployment.get("schedules") or []:
            CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
        if (limit := deployment.get("concurrency_limit")) is not None:
            config = ConcurrencyLimitConfig.model_validate(limit)
            assert config.limit >= 1
    retrain = ConcurrencyLimitConfig.model_validate(by_name["retrain"]["concurrency_limit"])
    assert retrain.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE
    with pytest.raises(ValueError):
        CronSchedule(cron="0 25 * * *")
