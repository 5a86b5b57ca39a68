"""`ModulesToSaveWrapper`: a module trained in full (e.g. a new classification head), one copy per adapter.

The original module stays frozen beside the copies so `disable_adapter()` and `unload()` can give the
base model back unchanged. On disk the active copy is stored under the ORIGINAL module path.
Attribute access falls through to the module in use (the active copy, or the original when adapters
are disabled or the active adapter has no copy here), so code that reads e.g. `head.weight` keeps
working on the wrapped model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from torch import nn

from peftcore.auxiliary import AuxiliaryTrainingWrapper

# Containers cannot be wrapped: their parent indexes them instead of calling forward.
_CONTAINERS = (nn.ModuleDict, nn.ModuleList, nn.ParameterDict, nn.ParameterList)


def check_wrappable(module: nn.Module) -> None:
    """Raise if `module` cannot be trained in full through a ModulesToSaveWrapper.

    Raises:
        TypeError: `module` is a container (ModuleDict, ModuleList, ...), which its parent indexes
            instead of calling.
    """
    if isinstance(module, _CONTAINERS):
        raise TypeError(
            f"modules_to_save cannot be applied to modules of type {type(module)}: a container is "
            "indexed by its parent, never called; list the modules inside it instead (e.g. 'module.0')"
        )


class ModulesToSaveWrapper(AuxiliaryTrainingWrapper):
    """`original_module` (frozen) plus `modules_to_save[adapter]`, a trainable copy per adapter."""

    # As on adapter layers: the containers holding per-adapter tensors.
    adapter_layer_names: tuple[str, ...] = ("modules_to_save",)
    other_param_names: tuple[str, ...] = ()

    def __init__(self, module_to_save: nn.Module, adapter_name: str) -> None:
        check_wrappable(module_to_save)
        super().__init__(module_to_save, adapter_name)
        self.modules_to_save = nn.ModuleDict()
        self.update(adapter_name)

    def update(self, adapter_name: str, **kwargs: Any) -> None:
        """Give `adapter_name` its own trainable copy of the original module (frozen until activated)."""
        if adapter_name not in self.modules_to_save:
            clone = copy.deepcopy(self.original_module)
            self.modules_to_save[adapter_name] = clone
            self._set_trainable(adapter_name, False)

    def adapter_names_held(self) -> list[str]:
        return list(self.modules_to_save.keys())

    def _set_trainable(self, adapter_name: str, trainable: bool) -> None:
        for param in self.modules_to_save[adapter_name].parameters():
            param.requires_grad_(trainable)

    def _delete(self, adapter_name: str) -> None:
        del self.modules_to_save[adapter_name]

    def _forward_adapter(self, adapter_name: str, *args: Any, **kwargs: Any) -> Any:
        return self.modules_to_save[adapter_name](*args, **kwargs)

    @property
    def active_module(self) -> nn.Module:
        """The module forward currently uses."""
        held = [name for name in self.active_adapters if name in self.modules_to_save]
        if self._disable_adapters or not held:
            return self.original_module
        return self.modules_to_save[held[0]]

    def unwrapped(self, merge: bool, adapter_names: Sequence[str] | None = None) -> nn.Module:
        """The module to put back on unload: the active copy when merging, else the original."""
        if not merge:
            return self.original_module
        names = self.active_adapters if adapter_names is None else list(adapter_names)
        held = [name for name in names if name in self.modules_to_save]
        return self.modules_to_save[held[0]] if held else self.original_module

    def adapter_state_keys(self, adapter_name: str) -> dict[str, str]:
        """On-disk key → in-memory key (relative to the wrapper) of `adapter_name`'s copy."""
        copy_ = self.modules_to_save[adapter_name]
        # Its persistent buffers too (as HF PEFT): a saved decode head's batch-norm running statistics
        # are part of what training changed.
        return {name: f"modules_to_save.{adapter_name}.{name}" for name in copy_.state_dict(keep_vars=True)}

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            pass
        if "_modules" not in self.__dict__ or "original_module" not in self.__dict__["_modules"]:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        if self._disable_adapters or not self.active_adapters:
            module: nn.Module = self._modules["original_module"]  # type: ignore[assignment]
        else:
            adapter = self.active_adapters[0]
            copies: nn.ModuleDict = self._modules["modules_to_save"]  # type: ignore[assignment]
            if adapter not in copies:
                raise AttributeError(
                    f"'{type(self).__name__}' object has no attribute '{name}' (its active adapter "
                    f"{adapter!r} has no copy here)"
                )
            module = copies[adapter]
        return getattr(module, name)
