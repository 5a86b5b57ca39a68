"""Trainable tokens: a few rows of an embedding table trained in full (`trainable_token_indices`).

`TrainableTokensLayer` keeps, per adapter, the chosen token ids, their trainable rows
(`trainable_tokens_delta`, initialised to the current rows, so the adapter starts as a no-op) and the
original rows; its forward uses the table with those rows replaced. A tied output head (an `lm_head`
sharing the embedding's weight) gets a layer that shares the embedding layer's rows, so both stay tied.
`TrainableTokensWrapper` is the auxiliary wrapper that puts the layer in the model.

On disk: `<path>.token_adapter.trainable_tokens_delta` (tokens × dim) for the embedding only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from peftcore.auxiliary import AuxiliaryTrainingWrapper
from peftcore.tuners.base_layer import BaseTunerLayer


class BufferDict(nn.Module):
    """A dict of tensors stored as (non-persistent) buffers, so they follow the module's `.to()`."""

    def __getitem__(self, key: str) -> torch.Tensor:
        return cast(torch.Tensor, self._buffers[key])

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        self.register_buffer(key, value, persistent=False)

    def __delitem__(self, key: str) -> None:
        del self._buffers[key]

    def __contains__(self, key: object) -> bool:
        return key in self._buffers

    def __len__(self) -> int:
        return len(self._buffers)

    def keys(self) -> Any:
        return self._buffers.keys()

    def items(self) -> Any:
        return self._buffers.items()


class TrainableTokensLayer(nn.Module, BaseTunerLayer):
    """Per-adapter replacement rows of an embedding (or of a tied linear head)."""

    adapter_layer_names: tuple[str, ...] = ("trainable_tokens_delta",)
    other_param_names: tuple[str, ...] = ("token_indices", "trainable_tokens_original")

    def __init__(
        self, base_layer: nn.Module, adapter_name: str, tied_adapter: TrainableTokensLayer | None = None
    ) -> None:
        nn.Module.__init__(self)
        BaseTunerLayer.__init__(self, base_layer)
        self._active_adapter = adapter_name
        # A list keeps the tied layer out of this module's children (it lives elsewhere in the model).
        self._tied_adapter = [tied_adapter] if tied_adapter is not None else []
        self.in_features: int | None = getattr(base_layer, "in_features", None)  # a tied nn.Linear head
        self.out_features: int | None = getattr(base_layer, "out_features", None)
        if isinstance(base_layer, nn.Embedding):
            self.in_features, self.out_features = base_layer.num_embeddings, base_layer.embedding_dim
        if tied_adapter is None:
            self.trainable_tokens_delta = nn.ParameterDict()
            self.trainable_tokens_original = BufferDict()
            self.token_indices: dict[str, list[int]] = {}
        else:
            self.trainable_tokens_delta = tied_adapter.trainable_tokens_delta
            self.trainable_tokens_original = tied_adapter.trainable_tokens_original
            self.token_indices = tied_adapter.token_indices

    @property
    def tied_adapter(self) -> TrainableTokensLayer | None:
        return self._tied_adapter[0] if self._tied_adapter else None

    @property
    def saves_adapter_tensors(self) -> bool:
        return self.tied_adapter is None  # the tied embedding saves the shared rows

    def update_layer(
        self, adapter_name: str, token_indices: Sequence[int], init_weights: bool = True
    ) -> None:
        """Make rows `token_indices` trainable for `adapter_name` (their current values, or random)."""
        if self.tied_adapter is not None:
            return
        weight = self.weight
        indices = [int(i) for i in token_indices]
        if any(i < 0 or i >= weight.shape[0] for i in indices):
            raise ValueError(
                f"trainable_token_indices {indices} reach outside the {weight.shape[0]} rows of the embedding; "
                "use token ids below the vocabulary size"
            )
        originals = weight.detach()[indices].clone()
        values = originals.clone() if init_weights else torch.randn_like(originals)
        self.token_indices[adapter_name] = indices
        self.trainable_tokens_delta[adapter_name] = nn.Parameter(values)
        self.trainable_tokens_original[adapter_name] = originals

    def delete_adapter(self, adapter_name: str) -> None:
        if self.tied_adapter is None:
            super().delete_adapter(adapter_name)
        elif adapter_name in self.active_adapters:
            self.set_adapter([n for n in self.active_adapters if n != adapter_name])

    def _check_overlap(self, names: Sequence[str]) -> None:
        seen: set[int] = set()
        for name in dict.fromkeys([*self.merged_adapters, *names]):
            rows = set(self.token_indices[name])
            if seen & rows:
                raise ValueError(
                    f"Token indices of adapter {name} are already defined and would result in undefined merging "
                    "behavior. Only disjunct token indices are currently supported."
                )
            seen |= rows

    def get_merged_weights(self, adapter_names: Sequence[str]) -> torch.Tensor:
        """The table with the rows of `adapter_names` replaced (differentiable in those rows)."""
        weight = self.weight
        for name in adapter_names:
            index = torch.tensor(self.token_indices[name], device=weight.device)
            weight = weight.index_copy(0, index, self.trainable_tokens_delta[name].to(weight))
        return weight

    def merge(self, safe_merge: bool = False, adapter_names: Sequence[str] | None = None) -> None:
        names = [n for n in self.adapters_to_merge(adapter_names) if n in self.token_indices]
        if not names:
            return
        self._check_overlap(names)
        with torch.no_grad():
            merged = self.get_merged_weights(names)
            if safe_merge and not torch.isfinite(merged).all():
                raise ValueError(
                    f"NaNs detected in the merged weights. The adapter {names[0]} seems to be broken"
                )
            self.weight.data.copy_(merged)
        self.merged_adapters.extend(names)

    def unmerge(self) -> None:
        with torch.no_grad():
            while self.merged_adapters:
                name = self.merged_adapters.pop()
                index = torch.tensor(self.token_indices[name], device=self.weight.device)
                self.weight.data.index_copy_(0, index, self.trainable_tokens_original[name].to(self.weight))

    def forward_adapters(
        self, x: torch.Tensor, adapter_names: Sequence[str], *args: Any, **kwargs: Any
    ) -> Any:
        names = [n for n in adapter_names if n in self.token_indices and n not in self.merged_adapters]
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if not names:
            return self.base_layer(x, *args, **kwargs)
        self._check_overlap(names)
        weight = self.get_merged_weights(names)
        base = self.base_layer
        if isinstance(base, nn.Embedding):
            return F.embedding(
                x,
                weight,
                base.padding_idx,
                base.max_norm,
                base.norm_type,
                base.scale_grad_by_freq,
                base.sparse,
            )
        if isinstance(base, nn.Linear):
            return F.linear(x, weight, base.bias)
        raise TypeError(
            f"trainable tokens wrap an nn.Embedding or a tied nn.Linear head, not a {type(base).__name__}"
        )

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.forward_adapters(x, self.active_adapters, *args, **kwargs)


class TrainableTokensWrapper(AuxiliaryTrainingWrapper):
    """An embedding (or tied head) with trainable rows per adapter; `token_adapter` does the work."""

    adapter_layer_names: tuple[str, ...] = ("token_adapter.trainable_tokens_delta",)
    other_param_names: tuple[str, ...] = (
        "token_adapter.token_indices",
        "token_adapter.trainable_tokens_original",
    )

    def __init__(
        self,
        module_to_save: nn.Module,
        adapter_name: str,
        token_indices: Sequence[int],
        tied_adapter: TrainableTokensLayer | None = None,
    ) -> None:
        if not isinstance(module_to_save, nn.Embedding | nn.Linear) or isinstance(
            module_to_save, BaseTunerLayer
        ):
            raise TypeError(
                f"trainable_token_indices cannot be applied to modules of type {type(module_to_save)}: they "
                "train rows of an nn.Embedding (or of the nn.Linear head tied to it). Point them at the embedding"
            )
        super().__init__(module_to_save, adapter_name)
        self._held: set[str] = set()
        self.token_adapter = TrainableTokensLayer(module_to_save, adapter_name, tied_adapter)
        self.update(adapter_name, token_indices=token_indices)

    @property
    def original_module(self) -> nn.Module:  # type: ignore[override]
        return self.token_adapter.base_layer

    def _register_original(self, module: nn.Module) -> None:
        """The original table lives inside `token_adapter` (registered once)."""

    def update(self, adapter_name: str, **kwargs: Any) -> None:
        if (
            adapter_name not in self.token_adapter.token_indices
            or self.token_adapter.tied_adapter is not None
        ):
            self.token_adapter.update_layer(adapter_name, kwargs["token_indices"])
        self._held.add(adapter_name)
        self._set_trainable(adapter_name, False)

    def adapter_names_held(self) -> list[str]:
        return sorted(self._held)

    def _set_trainable(self, adapter_name: str, trainable: bool) -> None:
        if adapter_name in self.token_adapter.trainable_tokens_delta:
            self.token_adapter.trainable_tokens_delta[adapter_name].requires_grad_(trainable)

    def _delete(self, adapter_name: str) -> None:
        self._held.discard(adapter_name)
        self.token_adapter.delete_adapter(adapter_name)

    def _forward_adapter(self, adapter_name: str, *args: Any, **kwargs: Any) -> Any:
        return self.token_adapter.forward_adapters(args[0], [adapter_name], *args[1:], **kwargs)

    def _check_several(self, names: list[str]) -> None:
        """Adapters training disjoint rows can be active together; overlapping rows are refused."""
        self.token_adapter._check_overlap(names)

    def _forward_active(self, names: list[str], *args: Any, **kwargs: Any) -> Any:
        return self.token_adapter.forward_adapters(args[0], names, *args[1:], **kwargs)

    def enable_adapters(self, enabled: bool) -> None:
        super().enable_adapters(enabled)
        self.token_adapter.enable_adapters(enabled)

    def unwrapped(self, merge: bool, adapter_names: Sequence[str] | None = None) -> nn.Module:
        return self.original_module

    def adapter_state_keys(self, adapter_name: str) -> dict[str, str]:
        return {}  # `token_adapter` is an adapter layer: the generic key map covers its rows

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "weight" and "token_adapter" in self.__dict__.get("_modules", {}):
                layer = cast(TrainableTokensLayer, self._modules["token_adapter"])
                active = [n for n in self.active_adapters if n in layer.token_indices]
                return layer.get_merged_weights([] if self._disable_adapters else active)
            raise
