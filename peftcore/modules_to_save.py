"""`ModulesToSaveWrapper`: a module trained in full (e.g. a new classification head), one copy per adapter.

The original module stays frozen beside the copies so `disable_adapter()` and `unload()` can give the
base model back unchanged. On disk the active copy is stored under the ORIGINAL module path.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
from torch import nn


class ModulesToSaveWrapper(nn.Module):
    def __init__(self, module_to_save: nn.Module, adapter_name: str) -> None:
        super().__init__()
        self.original_module = module_to_save
        self.modules_to_save = nn.ModuleDict()
        self.active_adapter: str | None = None
        self.disable_adapters = False
        self.add(adapter_name)
        self.active_adapter = adapter_name

    def add(self, adapter_name: str) -> None:
        """Give `adapter_name` its own trainable copy of the original module."""
        if adapter_name not in self.modules_to_save:
            clone = copy.deepcopy(self.original_module)
            for p in clone.parameters():
                p.requires_grad_(True)
            self.modules_to_save[adapter_name] = clone
        for p in self.original_module.parameters():
            p.requires_grad_(False)

    @property
    def active_module(self) -> nn.Module:
        adapter = self.active_adapter
        if self.disable_adapters or adapter is None or adapter not in self.modules_to_save:
            return self.original_module
        return self.modules_to_save[adapter]

    @property
    def weight(self) -> torch.Tensor:
        # nn.Module attribute lookups are typed `Tensor | Module`; a wrapped module's weight is a tensor.
        return cast(torch.Tensor, self.active_module.weight)

    def set_adapter(self, adapter_name: str, trainable: bool) -> None:
        # An adapter without a copy here leaves the original in use (another adapter's head).
        self.active_adapter = adapter_name if adapter_name in self.modules_to_save else None
        for name, module in self.modules_to_save.items():
            for p in module.parameters():
                p.requires_grad_(trainable and name == adapter_name)

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name in self.modules_to_save:
            del self.modules_to_save[adapter_name]
        if self.active_adapter == adapter_name:
            self.active_adapter = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.active_module(*args, **kwargs)
