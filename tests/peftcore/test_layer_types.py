"""LoRA on the layer types beyond Linear: Conv1d, Conv3d, grouped Conv2d, MultiheadAttention, and DoRA on
Embedding and Conv2d. Each is checked on its own (identity at init, merge == forward with a non-zero B,
unmerge restores the weights, save → load) and against HF peft on the same weights, both ways."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from peftcore import LoraConfig, PeftModel, get_peft_model
from peftcore.tuners.lora import Conv1d, Conv2d, Conv3d, Embedding, MultiheadAttention

TOL = {"atol": 1e-5, "rtol": 1e-5}


class ConvNet1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3, padding=1)
        self.head = nn.Linear(6 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


class ConvNet3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, padding=1)
        self.head = nn.Linear(4 * 4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


class GroupedConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.head = nn.Linear(8 * 5 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


class ConvNet2d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.head = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


class AttentionNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.mha(x, x, x)
        return self.head(out)


class EmbeddingNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(x)).mean(1)


# name -> (model factory, input factory, config kwargs, expected layer class)
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[], torch.Tensor], dict[str, Any], type]] = {
    "conv1d": (ConvNet1d, lambda: torch.randn(3, 4, 8), {"target_modules": ["conv"]}, Conv1d),
    "conv3d": (ConvNet3d, lambda: torch.randn(2, 2, 4, 4, 4), {"target_modules": ["conv"]}, Conv3d),
    "conv2d-groups": (
        GroupedConvNet,
        lambda: torch.randn(2, 8, 5, 5),
        {"target_modules": ["conv"], "r": 4},
        Conv2d,
    ),
    "mha": (AttentionNet, lambda: torch.randn(5, 2, 8), {"target_modules": ["mha"]}, MultiheadAttention),
    "dora-conv2d": (
        ConvNet2d,
        lambda: torch.randn(2, 3, 6, 6),
        {"target_modules": ["conv"], "use_dora": True},
        Conv2d,
    ),
    "dora-embedding": (
        EmbeddingNet,
        lambda: torch.randint(0, 20, (3, 5)),
        {"target_modules": ["emb"], "use_dora": True},
        Embedding,
    ),
}
MERGEABLE = [name for name in CASES if name != "conv2d-groups"]


def _build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return CASES[name][0]().eval()


def _inputs(name: str) -> torch.Tensor:
    torch.manual_seed(7)
    return CASES[name][1]()


def _wrap(name: str, **overrides: Any) -> PeftModel:
    kwargs = {**CASES[name][2], **overrides}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # grouped conv: "merging is not supported"
        return get_peft_model(_build(name), LoraConfig(**kwargs)).eval()


def _perturb(model: nn.Module) -> None:
    """Move every trainable tensor (B, magnitudes) away from its initial value."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.mark.parametrize("name", list(CASES))
def test_layer_is_wrapped_and_identity_at_init(name: str) -> None:
    base_out = _build(name)(_inputs(name))
    pm = _wrap(name)
    target = CASES[name][2]["target_modules"][0]
    assert isinstance(getattr(pm.get_base_model(), target), CASES[name][3])
    torch.testing.assert_close(pm(_inputs(name)), base_out, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", MERGEABLE)
def test_merge_matches_forward_and_unmerge_restores(name: str) -> None:
    pm = _wrap(name)
    _perturb(pm)
    weights = {
        n: p.detach().clone() for n, p in pm.get_base_model().named_parameters() if not p.requires_grad
    }
    adapted = pm(_inputs(name))
    assert not torch.allclose(adapted, _build(name)(_inputs(name)), atol=1e-4)
    pm.merge_adapter()
    torch.testing.assert_close(pm(_inputs(name)), adapted, **TOL)
    pm.unmerge_adapter()
    for n, p in pm.get_base_model().named_parameters():
        if n in weights:
            torch.testing.assert_close(p, weights[n], **TOL)
    merged = pm.merge_and_unload()
    assert not any(isinstance(m, CASES[name][3]) for m in merged.modules())
    torch.testing.assert_close(merged(_inputs(name)), adapted, **TOL)


def test_grouped_conv_needs_rank_divisible_by_groups_and_refuses_merging() -> None:
    with pytest.raises(ValueError, match=r"groups=2 and rank 3.*divisible by groups"):
        get_peft_model(GroupedConvNet(), LoraConfig(target_modules=["conv"], r=3))
    pm = _wrap("conv2d-groups")
    _perturb(pm)
    with pytest.raises(NotImplementedError, match="groups > 1"):
        pm.merge_adapter()


@pytest.mark.parametrize("name", list(CASES))
def test_save_load_round_trip(name: str, tmp_path: Path) -> None:
    pm = _wrap(name)
    _perturb(pm)
    expected = pm(_inputs(name))
    pm.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(_build(name), tmp_path)
    torch.testing.assert_close(loaded(_inputs(name)), expected, atol=1e-6, rtol=1e-6)
    keys = set(load_file(str(tmp_path / "adapter_model.safetensors")))
    assert all(".default" not in k for k in keys)
    if CASES[name][2].get("use_dora"):
        assert any(k.endswith(".lora_magnitude_vector") for k in keys)


def _mha_reference(pm: PeftModel) -> nn.Module:
    """The attention net with W_in + s·B A and W_out + s·B A written into its weights (LoRA's formula)."""
    reference = _build("mha")
    layer = pm.get_base_model().mha
    out = layer.base_layer.out_proj
    with torch.no_grad():
        reference.mha.in_proj_weight += layer.get_delta_weight("default")
        reference.mha.out_proj.weight += out.get_delta_weight("default")
    return reference


@pytest.mark.parametrize("name", list(CASES))
def test_files_move_both_ways_with_hf_peft(name: str, tmp_path: Path) -> None:
    """Same keys and shapes on disk; the same outputs from the same tensors in both libraries.

    Except for MultiheadAttention outputs: HF peft 0.21.2 adds the output projection's update twice
    (its MHA merges `out_proj` by hand and then merges it again through the LoRA Linear), so its
    outputs follow W_out + 2·s·B A. peftcore follows the formula, checked here against a reference
    model with the update written into its weights.
    """
    peft = pytest.importorskip("peft")
    pm = _wrap(name)
    _perturb(pm)
    pm.save_pretrained(tmp_path / "pc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = peft.PeftModel.from_pretrained(_build(name), str(tmp_path / "pc")).eval()
    if name == "mha":
        torch.testing.assert_close(pm(_inputs(name)), _mha_reference(pm)(_inputs(name)), atol=1e-6, rtol=1e-6)
    else:
        torch.testing.assert_close(hf(_inputs(name)), pm(_inputs(name)), **TOL)
    pc_keys = {k: v.shape for k, v in load_file(str(tmp_path / "pc" / "adapter_model.safetensors")).items()}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = peft.get_peft_model(_build(name), peft.LoraConfig(**CASES[name][2])).eval()
    _perturb(hf)
    hf.save_pretrained(str(tmp_path / "hf"))
    hf_keys = {k: v.shape for k, v in load_file(str(tmp_path / "hf" / "adapter_model.safetensors")).items()}
    assert pc_keys == hf_keys, "same keys and shapes on disk"
    loaded = PeftModel.from_pretrained(_build(name), tmp_path / "hf")
    if name != "mha":
        torch.testing.assert_close(loaded(_inputs(name)), hf(_inputs(name)), **TOL)
    else:
        torch.testing.assert_close(
            loaded(_inputs(name)), _mha_reference(loaded)(_inputs(name)), atol=1e-6, rtol=1e-6
        )


def test_mha_refuses_dora_and_separate_kv_dims_before_any_change() -> None:
    model = AttentionNet()
    with pytest.raises(ValueError, match="does not support DoRA"):
        get_peft_model(model, LoraConfig(target_modules=["mha"], use_dora=True))
    assert isinstance(model.mha, nn.MultiheadAttention)

    class KV(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, kdim=4, vdim=6)

    with pytest.raises(ValueError, match="Only same embed for query/key/value"):
        get_peft_model(KV(), LoraConfig(target_modules=["mha"]))


def test_mha_exposes_the_attention_attributes_and_trains_only_adapters() -> None:
    model = AttentionNet()
    pm = _wrap("mha")
    layer = pm.get_base_model().mha
    assert (layer.embed_dim, layer.num_heads, layer.batch_first) == (8, 2, False)
    assert layer.out_proj is model.mha.out_proj or isinstance(layer.out_proj, nn.Linear)
    pm.train()
    pm(_inputs("mha")).sum().backward()
    grads = {n for n, p in pm.named_parameters() if p.grad is not None}
    assert grads and all(".lora_" in n for n in grads)
    assert {n.split(".lora_")[1].split(".")[0] for n in grads} == {"A", "B"}
    assert any(".out_proj.lora_A" in n for n in grads) and any("mha.lora_A" in n for n in grads)
