"""LoRA under torch FSDP2 (`fully_shard`): 2 CPU processes with gloo train the adapter a single process
trains, and rank 0 saves it complete from the gathered full state dict.

Every parameter is a DTensor shard on each rank; `PeftModel.state_dict()` goes through the modules, so
FSDP's state-dict machinery (`get_model_state_dict(full_state_dict=True)`) assembles whole tensors,
and `save_pretrained(state_dict=...)` writes them in HF's layout. (When `state_dict()` returned the
adapter tensors straight from the parameters, no module hook ran and rank 0 could only save shards.)
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

import peftcore
from tests import tiny

STEPS = 3
BATCH = 8
ATOL = 1e-5  # the DDP proof's adapter tolerance (tests/flows/test_distributed.py)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _train(rank: int, world: int, port: int, out_dir: str) -> None:
    """Train LoRA for STEPS SGD steps on this rank's share of one fixed batch; save from rank 0."""
    torch.set_num_threads(1)
    sharded = world > 1
    if sharded:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = tiny.build("llama").train()
    torch.manual_seed(1)
    config = peftcore.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    peft_model = peftcore.get_peft_model(model, config)
    if sharded:
        from torch.distributed.fsdp import fully_shard

        for layer in peft_model.base_model.model.model.layers:
            fully_shard(layer)
        fully_shard(peft_model)
    if not sharded:
        peft_model.save_pretrained(out_dir + "-init")  # the starting point, to see that training moved it
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.5)
    ids = torch.randint(0, tiny.VOCAB, (BATCH, 12), generator=torch.Generator().manual_seed(2))
    mine = ids[rank::world]  # equal shares: the mean of the ranks' mean losses is the full-batch mean
    for _ in range(STEPS):
        loss = peft_model(input_ids=mine, labels=mine).loss
        loss.backward()  # FSDP2 averages the gradients over the ranks
        optimizer.step()
        optimizer.zero_grad()
    layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    weight = layer.lora_A["default"].weight
    info = {
        "param_type": type(weight).__name__,
        "local_rows": int(getattr(weight, "to_local", lambda: weight)().shape[0]),
    }
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(
            peft_model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
    else:
        full = None
    if rank == 0:
        peft_model.save_pretrained(out_dir, state_dict=full)
        Path(out_dir, "info.json").write_text(json.dumps(info))
    if sharded:
        dist.barrier()
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fsdp2_on_two_gloo_processes_saves_the_adapter_one_process_trains(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    _train(0, 1, 0, str(tmp_path / "single"))
    mp.spawn(_train, args=(2, _free_port(), str(tmp_path / "fsdp")), nprocs=2, join=True)

    info = json.loads((tmp_path / "fsdp" / "info.json").read_text())
    assert info == {"param_type": "DTensor", "local_rows": 2}  # rank 0 held half of every r=4 matrix
    single = load_file(tmp_path / "single" / "adapter_model.safetensors")
    sharded = load_file(tmp_path / "fsdp" / "adapter_model.safetensors")
    assert single.keys() == sharded.keys() and single
    for key, value in single.items():
        assert sharded[key].shape == value.shape, key  # whole tensors, not rank 0's shards
        assert (sharded[key] - value).abs().max().item() <= ATOL, key
    # Training moved the adapter well beyond the tolerance, so the agreement means something.
    start = load_file(tmp_path / "single-init" / "adapter_model.safetensors")
    assert max((sharded[k] - start[k]).abs().max().item() for k in start) > 100 * ATOL
    # A complete HF-format adapter: it loads on the unsharded model.
    trained = peftcore.PeftModel.from_pretrained(tiny.build("llama"), tmp_path / "fsdp")
    assert trained.peft_config["default"].r == 4
