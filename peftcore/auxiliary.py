"""`AuxiliaryTrainingWrapper`: a base-model module trained beside the adapters, one state per adapter.

Two kinds exist: `ModulesToSaveWrapper` (a full trainable copy of a module, e.g. a new head) and
`TrainableTokensWrapper` (a few trainable rows of an embedding). Both keep the original module
frozen so that `disable_adapter()` and `unload()` give the base model back unchanged, and unlike
additive adapters at most one adapter can be active on a given wrapper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from peftcore.tuners.base_layer import as_name_list

# Module types whose forward takes a batch-first tensor that can be split by rows for mixed batches.
MIXED_BATCH_MODULES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class AuxiliaryTrainingWrapper(nn.Module):
    """Shared state of the auxiliary wrappers: the frozen original, the active adapter, enabled or not.

    Subclasses implement `update` (add an adapter), `adapter_names_held`, `_set_trainable`,
    `_delete`, `_forward_adapter`, `unwrapped` (the module to put back on unload) and
    `adapter_state_keys` (the key mapping of saved tensors).
    """

    def __init__(self, module_to_save: nn.Module, adapter_name: str) -> None:
        super().__init__()
        self._register_original(module_to_save)
        self._active_adapter: str | list[str] = []
        self._disable_adapters = False
        for param in module_to_save.parameters():
            param.requires_grad_(False)

    def _register_original(self, module: nn.Module) -> None:
        """Keep the wrapped module as `original_module` (a subclass may keep it elsewhere)."""
        self.original_module = module

    # -- to implement -----------------------------------------------------------------------------
    def update(self, adapter_name: str, **kwargs: Any) -> None:
        raise NotImplementedError

    def adapter_names_held(self) -> list[str]:
        raise NotImplementedError

    def _set_trainable(self, adapter_name: str, trainable: bool) -> None:
        raise NotImplementedError

    def _delete(self, adapter_name: str) -> None:
        raise NotImplementedError

    def _forward_adapter(self, adapter_name: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def unwrapped(self, merge: bool, adapter_names: Sequence[str] | None = None) -> nn.Module:
        raise NotImplementedError

    def adapter_state_keys(self, adapter_name: str) -> dict[str, str]:
        """On-disk key → in-memory key, both relative to the wrapper, of `adapter_name`'s tensors."""
        raise NotImplementedError

    # -- state ------------------------------------------------------------------------------------
    @property
    def _adapters(self) -> set[str]:
        return set(self.adapter_names_held())

    @property
    def disable_adapters(self) -> bool:
        return self._disable_adapters

    @property
    def active_adapters(self) -> list[str]:
        return as_name_list(self._active_adapter)

    @property
    def active_adapter(self) -> str | list[str]:
        return self._active_adapter

    def set_adapter(self, adapter_names: str | Sequence[str], inference_mode: bool = False) -> None:
        """Activate those of `adapter_names` this wrapper holds (none: the original is used).

        Raises:
            ValueError: the adapters cannot be active together here (`_check_several`).
        """
        names = [name for name in as_name_list(adapter_names) if name in self.adapter_names_held()]
        if len(names) > 1:
            self._check_several(names)
        for name in self.adapter_names_held():
            self._set_trainable(name, name in names and not inference_mode)
        self._active_adapter = names

    def _check_several(self, names: list[str]) -> None:
        """Raise unless the adapters `names` (all held here) can be active at once. Default: never, as
        each holds a full copy of the module and their outputs cannot be combined."""
        raise ValueError(
            f"Attempted to set multiple ({names}) adapters at once for {type(self).__name__}: each of them "
            "trains this module in full, so their outputs cannot be combined. Activate one of them"
        )

    def check_set_adapter(self, adapter_names: str | Sequence[str]) -> str | None:
        """The adapter of `adapter_names` this wrapper would activate for a model-wide `set_adapter`
        (None: it holds none of them).

        Raises:
            ValueError: it holds more than one of them; model-wide, one adapter per wrapper is allowed
                (as HF PEFT).
        """
        names = [name for name in as_name_list(adapter_names) if name in self.adapter_names_held()]
        if len(names) > 1:
            raise ValueError(
                f"Only one adapter can be set at a time for {type(self).__name__}, got {len(names)} ({names}): "
                "these adapters all train this module, so only one of them can be active across the model. "
                "Activate adapters whose modules_to_save / trainable_token_indices name different modules"
            )
        return names[0] if names else None

    def set_requires_grad(self, adapter_names: str | Sequence[str], requires_grad: bool = True) -> None:
        for name in as_name_list(adapter_names):
            if name in self.adapter_names_held():
                self._set_trainable(name, requires_grad)

    def enable_adapters(self, enabled: bool) -> None:
        if enabled:
            self.set_adapter(self.active_adapters)
            self._disable_adapters = False
        else:
            for name in self.adapter_names_held():
                self._set_trainable(name, False)
            self._disable_adapters = True

    def delete_adapter(self, adapter_name: str, new_active_adapters: Sequence[str] | None = None) -> None:
        """Drop `adapter_name`'s state; the active set becomes `new_active_adapters` (those held here)."""
        if adapter_name in self.adapter_names_held():
            self._delete(adapter_name)
        if new_active_adapters is not None:
            self.set_adapter(list(new_active_adapters))
        else:
            self._active_adapter = [name for name in self.active_adapters if name != adapter_name]

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, *args: Any, adapter_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
        if self._disable_adapters:
            return self.original_module(*args, **kwargs)
        if adapter_names is not None:
            return self._mixed_batch_forward(args[0], *args[1:], adapter_names=adapter_names, **kwargs)
        names = [name for name in self.active_adapters if name in self.adapter_names_held()]
        if not names:
            return self.original_module(*args, **kwargs)
        return self._forward_active(names, *args, **kwargs)

    def _forward_active(self, names: list[str], *args: Any, **kwargs: Any) -> Any:
        """Forward with the active adapters `names` (held here; several only where `_check_several`
        allowed them)."""
        return self._forward_adapter(names[0], *args, **kwargs)

    def _mixed_batch_forward(
        self, x: torch.Tensor, *args: Any, adapter_names: Sequence[str], **kwargs: Any
    ) -> torch.Tensor:
        """Row i of the batch goes through adapter `adapter_names[i]` ("__base__": the original)."""
        if not isinstance(self.original_module, MIXED_BATCH_MODULES):
            supported = ", ".join(cls.__name__ for cls in MIXED_BATCH_MODULES)
            raise TypeError(
                f"Mixed batching is only supported for the following modules: {supported}. "
                f"{type(self).__name__} wraps a {type(self.original_module).__name__}; call the model "
                "without adapter_names for it"
            )
        outputs: list[tuple[list[int], torch.Tensor]] = []
        for name in dict.fromkeys(adapter_names):
            rows = [i for i, n in enumerate(adapter_names) if n == name]
            sub = x[rows]
            if name == "__base__" or name not in self.adapter_names_held():
                out = self.original_module(sub, *args, **kwargs)
            else:
                out = self._forward_adapter(name, sub, *args, **kwargs)
            outputs.append((rows, out))
        first = outputs[0][1]
        result = first.new_empty((len(adapter_names), *first.shape[1:]))
        for rows, out in outputs:
            result[rows] = out.to(result.dtype)
        return result
