"""LoRA initialisations that move the base weight's principal part into the adapter.

    PiSSA:  W = U S Vᵀ;  B = U_r √(S_r / s),  A = √(S_r / s) V_rᵀ;   W_res = W − s B A
    OLoRA:  W = Q R;     B = Q_r,              A = R_r;              W_res = W − s B A

with s the LoRA scaling, so `W_res + s B A = W`: the model computes the same at init, but training
starts from the weight's top singular directions (PiSSA; `pissa_niter_k` uses a randomised SVD with
k subspace iterations) or its QR basis (OLoRA). The base layer then holds `W_res`, so the adapter
only works on that modified base: `convert_to_plain_lora` turns a trained adapter into a plain
LoRA of twice the rank that applies to the ORIGINAL weight:

    s (B A − B₀ A₀) = (2s / 2) [B | −B₀] [A ; A₀]

(HF PEFT's `path_initial_model_for_weight_conversion`: r and lora_alpha are doubled, or alpha × √2
with rsLoRA, so the scaling is unchanged.)
"""

from __future__ import annotations

import math
import re

import torch

_NITER = re.compile(r"pissa_niter_(\d+)")


def is_weight_moving_init(init: object) -> bool:
    """Does this `init_lora_weights` value rewrite the base weight (PiSSA / OLoRA; "OLoRA" too)?"""
    return isinstance(init, str) and (
        init in ("pissa", "olora", "OLoRA") or _NITER.fullmatch(init) is not None
    )


def check_init_name(init: str) -> None:
    if init.startswith("pissa") and init != "pissa" and _NITER.fullmatch(init) is None:
        raise ValueError(
            f"init_lora_weights should be 'pissa' or 'pissa_niter_[number of iters]', got {init} instead"
        )


def principal_factors(
    weight: torch.Tensor, r: int, scaling: float, init: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, B, W_res) in fp32 for an (out, in) weight, as in the module docstring."""
    w = weight.detach().to(torch.float32)
    if init.lower() == "olora":
        q, rr = torch.linalg.qr(w)
        b, a = q[:, :r].contiguous(), rr[:r].contiguous()
    else:
        match = _NITER.fullmatch(init)
        if match is None:
            u, s, vh = torch.linalg.svd(w, full_matrices=False)
            u, s, vh = u[:, :r], s[:r], vh[:r]
        else:
            u, s, v = torch.svd_lowrank(w, q=r, niter=int(match.group(1)))
            vh = v.t()
        root = torch.sqrt(s / scaling)
        a = torch.diag(root) @ vh
        b = u @ torch.diag(root)
    return a, b, w - scaling * (b @ a)


def convert_to_plain_lora(
    trained: dict[str, torch.Tensor], initial: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """On-disk tensors of a trained PiSSA / OLoRA adapter → those of the equivalent plain LoRA
    (rank doubled: `[A ; A₀]`, `[B | −B₀]`); other tensors are kept as they are.

    Raises:
        ValueError: the initial adapter lacks a tensor of the trained one or its shape differs.
    """
    out = dict(trained)
    for key, value in trained.items():
        part = key.rsplit(".", 2)[-2] if key.endswith(".weight") else ""
        if part not in ("lora_A", "lora_B"):
            continue
        start = initial.get(key)
        if start is None or start.shape != value.shape:
            found = None if start is None else tuple(start.shape)
            raise ValueError(
                f"the initial adapter has {found} for {key!r}, the trained one {tuple(value.shape)}: "
                "path_initial_model_for_weight_conversion must hold this adapter as saved right after get_peft_model"
            )
        start = start.to(value)
        out[key] = torch.cat([value, start], dim=0) if part == "lora_A" else torch.cat([value, -start], dim=1)
    return out


def doubled_alpha(alpha: float, use_rslora: bool) -> float:
    """lora_alpha for the doubled rank with the same scaling."""
    return alpha * (math.sqrt(2) if use_rslora else 2)
