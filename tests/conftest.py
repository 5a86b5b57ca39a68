"""Shared test setup: offline Hugging Face, no telemetry, and tiny models built from configs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Set before transformers / huggingface_hub are imported anywhere: a Hub lookup would hang ~45 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from tests import tiny

pytest_plugins = ["tests.support.hub_server"]


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(WorkerGroups(), "peftflow-worker-groups")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the longest groups first
        items[:] = slow_groups_first(items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# -- two workers (`make test`: pytest-xdist, -n 2 --dist loadfile) --------------------------------------
# A worker takes a whole group, in order: a test file (its module fixtures are built once, its tests keep
# their order), or every file on the session's local stack (tests/infra/conftest.py), so that one stack
# serves them all. Groups holding `slow` tests go first, so that no long one starts last.
INFRA = Path(__file__).parent / "infra"
STACK_FILES = frozenset(
    f"tests/infra/{path.name}"
    for path in INFRA.glob("test_*.py")
    if "local_stack: LocalStack" in path.read_text()  # a test that takes the fixture
)


def worker_group(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return "local-stack" if path in STACK_FILES else path


def slow_groups_first(items: list[pytest.Item]) -> list[pytest.Item]:
    groups: dict[str, list[pytest.Item]] = {}
    for item in items:
        groups.setdefault(worker_group(item.nodeid), []).append(item)
    ordered = sorted(groups.values(), key=lambda group: not any("slow" in i.keywords for i in group))
    return [item for group in ordered for item in group]


class WorkerGroups:
    """`--dist loadfile` with `worker_group` as the unit a worker takes."""

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if config.getvalue("dist") != "loadfile":
            return None
        from xdist.scheduler import LoadScopeScheduling

        class Scheduling(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return worker_group(nodeid)

        config.option.loadscopereorder = False  # keep the order the workers collected: slow groups first
        return Scheduling(config, log)


@pytest.fixture(params=tiny.ARCHS)
def arch(request: pytest.FixtureRequest) -> str:
    """Each tiny architecture in turn: llama, gpt2, opt, t5, bert."""
    return request.param


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
