"""`PromptTuningConfig` and `PromptTuningInit`: HF PEFT's fields and defaults."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar

from peftcore.config import PeftType
from peftcore.tuners.prompt import PromptLearningConfig


class PromptTuningInit(str, enum.Enum):
    """How the virtual tokens start: words of a text, random vocabulary rows, or N(0, 1)."""

    TEXT = "TEXT"
    SAMPLE_VOCAB = "SAMPLE_VOCAB"
    RANDOM = "RANDOM"


@dataclass
class PromptTuningConfig(PromptLearningConfig):
    """Prompt tuning: `num_virtual_tokens` trained input embeddings placed before the real tokens.

    Args:
        prompt_tuning_init: TEXT (the embeddings of `prompt_tuning_init_text`'s tokens, repeated or cut
            to the number of virtual tokens), SAMPLE_VOCAB (embeddings of random vocabulary ids) or
            RANDOM (N(0, 1), the default).
        prompt_tuning_init_text: the text for TEXT init.
        tokenizer_name_or_path: the tokenizer (Hub id or path) that tokenizes the text for TEXT init.
        tokenizer_kwargs: extra arguments for `AutoTokenizer.from_pretrained` (TEXT init only).
    """

    PEFT_TYPE: ClassVar[PeftType] = PeftType.PROMPT_TUNING

    prompt_tuning_init: PromptTuningInit | str = PromptTuningInit.RANDOM
    prompt_tuning_init_text: str | None = None
    tokenizer_name_or_path: str | None = None
    tokenizer_kwargs: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            self.prompt_tuning_init = PromptTuningInit(
                getattr(self.prompt_tuning_init, "value", self.prompt_tuning_init)
            )
        except ValueError:
            raise ValueError(
                f"prompt_tuning_init={self.prompt_tuning_init!r} is not one of "
                f"{[m.value for m in PromptTuningInit]}; use e.g. prompt_tuning_init='RANDOM'"
            ) from None
        text = self.prompt_tuning_init == PromptTuningInit.TEXT
        if text and not self.tokenizer_name_or_path:
            raise ValueError(
                f"When prompt_tuning_init='TEXT', tokenizer_name_or_path can't be {self.tokenizer_name_or_path}: "
                "pass the tokenizer that tokenizes prompt_tuning_init_text, e.g. the base model's id"
            )
        if text and self.prompt_tuning_init_text is None:
            raise ValueError(
                f"When prompt_tuning_init='TEXT', prompt_tuning_init_text can't be {self.prompt_tuning_init_text}: "
                "pass the text whose token embeddings start the prompt"
            )
        if self.tokenizer_kwargs and not text:
            raise ValueError(
                "tokenizer_kwargs only valid when using prompt_tuning_init='TEXT': "
                f"prompt_tuning_init={self.prompt_tuning_init.value!r} tokenizes nothing; drop tokenizer_kwargs"
            )
