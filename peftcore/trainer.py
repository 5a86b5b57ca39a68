"""Adapter-only checkpoints from the transformers `Trainer`.

The Trainer writes `model.state_dict()` for models it does not know; a peftcore `PeftModel`'s state
dict is the whole model (as any `nn.Module`'s), so without help every checkpoint would repeat the
frozen base. `AdapterCheckpointsMixin` hands the Trainer the adapter entries instead — taken from the
state dict the Trainer gathered (under FSDP, the full one it assembled), so no module hook is
bypassed — and resuming loads them back with `load_state_dict` (the base stays as loaded).

    from peftcore.trainer import AdapterTrainer
    trainer = AdapterTrainer(model=peft_model, args=args, train_dataset=...)
"""

from __future__ import annotations

from typing import Any

from transformers import Trainer

from peftcore.peft_model import PeftModel


class AdapterCheckpointsMixin:
    """Mix in before `Trainer` (`class MyTrainer(AdapterCheckpointsMixin, Trainer)`)."""

    def _save(self, output_dir: str | None = None, state_dict: dict[str, Any] | None = None) -> None:
        trainer: Any = self
        model = trainer.accelerator.unwrap_model(trainer.model, keep_torch_compile=False)
        if isinstance(model, PeftModel):
            state_dict = model.adapter_state_dict(state_dict)
        super()._save(output_dir, state_dict=state_dict)  # type: ignore[misc]


class AdapterTrainer(AdapterCheckpointsMixin, Trainer):
    """The transformers `Trainer`, writing adapter-only checkpoints of a peftcore `PeftModel`."""
