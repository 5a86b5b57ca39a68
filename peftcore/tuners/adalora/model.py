"""`AdaLoraModel`: AdaLoRA on a model — SVD layers, the rank schedule, the orthogonality penalty.

Inside the transformers `Trainer` training needs nothing from the user beyond `total_step`: after
every optimizer step that updates this adapter's tensors, the allocator runs (`update_and_allocate`)
through a torch optimizer hook. A plain loop calls `model.base_model.update_and_allocate(step)` itself,
as HF PEFT asks (the hook stays out of it, so such a loop computes exactly what HF PEFT does);
`allocate_on_optimizer_step` = "always" / "never" changes that. A call to `update_and_allocate` takes
over from the hook (the step the hook already ran is not run twice). A forward whose output has a
loss gets `orth_reg_weight · mean ‖PᵀP − I‖_F` over A and B added to it.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any, ClassVar, Literal, cast

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from transformers.pytorch_utils import Conv1D

from peftcore.config import PeftConfig
from peftcore.constants import TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING
from peftcore.tuners.adalora.allocator import RankAllocator
from peftcore.tuners.adalora.config import AdaLoraConfig
from peftcore.tuners.adalora.layer import AdaLoraLayer, SVDConv2d, SVDLinear
from peftcore.tuners.base import BaseTuner
from peftcore.tuners.base_layer import BaseTunerLayer

_LIVE: weakref.WeakSet[AdaLoraModel] = weakref.WeakSet()
_HOOK: Any = None


def _after_any_optimizer_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    if not _LIVE:
        return
    ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for tuner in list(_LIVE):
        tuner._after_optimizer_step(ids)


def _inside_trainer() -> bool:
    """Is a transformers `Trainer` training loop on the call stack?"""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "_inner_training_loop" and "transformers" in code.co_filename:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _watch(tuner: AdaLoraModel) -> None:
    global _HOOK
    _LIVE.add(tuner)
    if _HOOK is None:
        _HOOK = register_optimizer_step_post_hook(_after_any_optimizer_step)


class AdaLoraModel(BaseTuner):
    """The AdaLoRA tuner (one trainable adapter; others must be in inference mode)."""

    prefix: ClassVar[str] = "lora_"
    layer_cls: ClassVar[type[BaseTunerLayer]] = AdaLoraLayer
    default_target_modules: ClassVar[dict[str, Any]] = TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING
    method_name: ClassVar[str] = "AdaLoRA"
    supports_quantized_layers: ClassVar[bool] = False  # its SVD layers read the weight directly
    # When the optimizer hook runs the schedule: inside a transformers Trainer (default), always, never.
    allocate_on_optimizer_step: Literal["trainer", "always", "never"] = "trainer"

    def __init__(
        self, model: nn.Module, peft_config: Any, adapter_name: str = "default", **kwargs: Any
    ) -> None:
        self.__dict__["_auto_step"] = 0
        self.__dict__["_manual"] = False
        self.__dict__["rankallocator"] = None
        self.__dict__["trainable_adapter_name"] = None
        super().__init__(model, peft_config, adapter_name, **kwargs)

    # -- adding -----------------------------------------------------------------------------------
    def _check_new_adapter_config(self, config: PeftConfig, adapter_name: str) -> None:
        super()._check_new_adapter_config(config, adapter_name)
        trainable = [n for n, c in self.peft_config.items() if not c.inference_mode]
        if not config.inference_mode and trainable:
            raise ValueError(
                "AdaLoraModel supports only 1 trainable adapter. When using multiple adapters, set inference_mode "
                f"to True for all adapters except the one you want to train ({trainable[0]!r} is trainable already)"
            )

    def _check_target_module(
        self, config: PeftConfig, adapter_name: str, name: str, module: nn.Module
    ) -> None:
        base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
        if not isinstance(base, nn.Linear | Conv1D | nn.Conv2d):
            raise ValueError(
                f"Target module {name!r} ({type(base).__name__}) is not supported. Currently, only `torch.nn.Linear`, "
                "`Conv1D`, and `torch.nn.Conv2d` are supported; adjust target_modules"
            )

    def _create_and_replace(
        self,
        config: PeftConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **kwargs: Any,
    ) -> None:
        ada = cast(AdaLoraConfig, config)
        if isinstance(target, AdaLoraLayer):
            target.update_layer(adapter_name, ada, ada.init_r, ada.lora_alpha, **kwargs)
            return
        base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
        is_conv1d = isinstance(base, Conv1D)
        ada.fan_in_fan_out = is_conv1d if not isinstance(base, nn.Conv2d) else ada.fan_in_fan_out
        cls = SVDConv2d if isinstance(base, nn.Conv2d) else SVDLinear
        new = cls(target, adapter_name, ada, ada.init_r, ada.lora_alpha, fan_in_fan_out=is_conv1d, **kwargs)
        setattr(parent, target_name, new)

    def _after_injection(self, config: PeftConfig, adapter_name: str, model: nn.Module) -> None:
        ada = cast(AdaLoraConfig, config)
        if ada.rank_pattern:  # a saved adapter: its layers hold only the kept triplets
            self.resize_modules_by_rank_pattern(ada.rank_pattern, adapter_name)
        if not ada.inference_mode:
            self.__dict__["trainable_adapter_name"] = adapter_name
            self.__dict__["rankallocator"] = RankAllocator(self._layers_of(adapter_name), ada, adapter_name)
            _watch(self)

    def _layers_of(self, adapter_name: str) -> dict[str, AdaLoraLayer]:
        return {
            name: module
            for name, module in self.model.named_modules()
            if isinstance(module, AdaLoraLayer) and adapter_name in module.lora_A
        }

    def resize_modules_by_rank_pattern(self, rank_pattern: dict[str, Any], adapter_name: str) -> None:
        """Cut each layer named in `rank_pattern` (`<module>.lora_E[.<adapter>]` → kept flags) to its kept triplets."""
        config = self.peft_config[adapter_name]
        for key, kept in rank_pattern.items():
            path = key.removesuffix(f".{adapter_name}").removesuffix(".lora_E")
            layer = self.model.get_submodule(path)
            if not isinstance(layer, AdaLoraLayer) or adapter_name not in layer.lora_A:
                raise ValueError(f"rank_pattern names {key!r}, which is not an AdaLoRA layer of this model")
            flags = torch.as_tensor(kept, dtype=torch.bool).view(-1)
            if int(flags.numel()) == layer.r[adapter_name]:
                layer.keep_triplets(adapter_name, flags, config)

    def adapter_tensors_to_save(
        self, adapter_name: str, tensors: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Only the kept triplets of each pruned layer are written (HF PEFT's file layout)."""
        pattern = self.peft_config[adapter_name].rank_pattern  # type: ignore[attr-defined]
        if not pattern:
            return tensors
        out = dict(tensors)
        for key, kept in pattern.items():
            path = key.removesuffix(f".{adapter_name}").removesuffix(".lora_E")
            flags = torch.as_tensor(kept, dtype=torch.bool).view(-1)
            for disk in out:
                part = disk.rsplit(".", 1)[-1]
                if part not in ("lora_A", "lora_B", "lora_E") or not (
                    disk == f"{path}.{part}" or disk.endswith(f".{path}.{part}")
                ):
                    continue
                dim = 1 if part == "lora_B" else 0
                if out[disk].shape[dim] == flags.numel():
                    out[disk] = out[disk][:, flags] if dim else out[disk][flags]
        return out

    # -- the schedule -----------------------------------------------------------------------------
    def update_and_allocate(self, global_step: int) -> None:
        """Update the sensitivities and prune to the step's budget; call after `optimizer.step()`.

        Optional: the optimizer hook does it (see the module docstring); a call here turns the hook off.
        """
        if not self._manual:
            self.__dict__["_manual"] = True
            if self._auto_step > 0 and global_step == self._auto_step - 1:
                return  # the hook has just run this step
        self._allocate(global_step)

    def _allocate(self, step: int) -> None:
        name = self.trainable_adapter_name
        allocator: RankAllocator | None = self.rankallocator
        if name is None or allocator is None:
            return
        config = cast(AdaLoraConfig, self.peft_config[name])
        end = cast(int, config.total_step) - config.tfinal
        if step < end:
            pattern = allocator.update_and_allocate(step)
            if pattern:
                config.rank_pattern = pattern
        elif step == end:
            config.rank_pattern = allocator.update_and_allocate(step, force_mask=True)
            allocator.reset_ipt()
        elif config.rank_pattern:
            allocator.mask_using_rank_pattern(config.rank_pattern)

    def _after_optimizer_step(self, optimizer_param_ids: set[int]) -> None:
        name = self.trainable_adapter_name
        mode = self.allocate_on_optimizer_step
        if self._manual or name is None or not self.model.training or mode == "never":
            return
        if mode == "trainer" and not _inside_trainer():
            return
        layers = self.rankallocator.layers if self.rankallocator is not None else {}
        if not any(id(layer.lora_E[name]) in optimizer_param_ids for layer in layers.values()):
            return
        step = self._auto_step
        self.__dict__["_auto_step"] = step + 1
        self._allocate(step)

    # -- the penalty ------------------------------------------------------------------------------
    def orthogonal_regularization(self) -> torch.Tensor | None:
        name = self.trainable_adapter_name
        if name is None or self.rankallocator is None:
            return None
        terms = []
        for layer in self.rankallocator.layers.values():
            a, b = layer.lora_A[name], layer.lora_B[name]
            for gram in (a @ a.t(), b.t() @ b):
                eye = torch.eye(*gram.shape, device=gram.device, dtype=gram.dtype)
                terms.append(torch.linalg.matrix_norm(gram - eye, ord="fro"))
        return torch.stack(terms).mean() if terms else None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        outputs = self.model(*args, **kwargs)
        loss = getattr(outputs, "loss", None)
        if isinstance(loss, torch.Tensor) and self.trainable_adapter_name is not None:
            config = cast(AdaLoraConfig, self.peft_config[self.trainable_adapter_name])
            penalty = self.orthogonal_regularization()
            if penalty is not None and config.orth_reg_weight > 0:
                outputs.loss = loss + config.orth_reg_weight * penalty
        return outputs

    def add_weighted_adapter(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            f"{type(self).__name__} does not support add_weighted_adapter method; use LoRA instead"
        )
