"""Mixed-adapter batches: `model(x, adapter_names=[...])` runs row i of the batch with adapter
`adapter_names[i]` ("__base__": no adapter), in one forward pass. The names reach every adapter layer
and auxiliary wrapper through forward pre-hooks for the duration of the call; each layer splits the
batch by adapter itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

from peftcore.auxiliary import AuxiliaryTrainingWrapper
from peftcore.tuners.base_layer import BaseTunerLayer

if TYPE_CHECKING:
    from peftcore.tuners.base import BaseTuner


def check(tuner: BaseTuner, adapter_names: list[str]) -> None:
    """Raise if a mixed batch cannot run now: training mode, unknown names, merged adapters."""
    if tuner.training:
        raise ValueError(
            "Cannot pass `adapter_names` when the model is in training mode: mixed batches are for inference; "
            "call model.eval() first"
        )
    unknown = sorted({n for n in adapter_names if n != "__base__" and n not in tuner.peft_config})
    if unknown:
        raise ValueError(
            f"Trying to infer with non-existing adapter(s): {', '.join(unknown)}; available: "
            f"{sorted(tuner.peft_config)} and '__base__'"
        )
    if any(layer.merged for _, layer in tuner.tuner_layers()):
        raise ValueError(
            "Cannot pass `adapter_names` when there are merged adapters, please call `unmerge_adapter` first."
        )


@contextlib.contextmanager
def adapter_names_passed(model: nn.Module, adapter_names: Sequence[str] | None) -> Iterator[None]:
    """Within the block, every adapter layer and wrapper of `model` gets `adapter_names=...` (if given)."""
    if adapter_names is None:
        yield
        return

    def pre_hook(_module: nn.Module, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return args, {**kwargs, "adapter_names": adapter_names}

    handles = [
        module.register_forward_pre_hook(pre_hook, with_kwargs=True)
        for module in model.modules()
        if isinstance(module, BaseTunerLayer | AuxiliaryTrainingWrapper)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
