"""`PeftModelFor<Task>`: the task-specific wrappers with explicit forward signatures.

The signatures name the inputs each task's models take, so tools that inspect `forward` (the
transformers `Trainer` drops dataset columns the model does not accept) keep the right columns.
"""

from __future__ import annotations

from typing import Any

import torch

from peftcore.peft_model import PeftModel

Tensor = torch.Tensor | None


class PeftModelForCausalLM(PeftModel):
    def forward(  # type: ignore[override]
        self,
        input_ids: Tensor = None,
        attention_mask: Tensor = None,
        position_ids: Tensor = None,
        past_key_values: Any = None,
        inputs_embeds: Tensor = None,
        labels: Tensor = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        return self._forward_named(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
            **kwargs,
        )


class PeftModelForSeq2SeqLM(PeftModel):
    """Text-to-text models, and speech-to-text ones (Whisper: `input_features` instead of `input_ids`);
    only the arguments given reach the base model, so each gets the inputs it takes."""

    def forward(  # type: ignore[override]
        self,
        input_ids: Tensor = None,
        attention_mask: Tensor = None,
        inputs_embeds: Tensor = None,
        input_features: Tensor = None,
        decoder_input_ids: Tensor = None,
        decoder_attention_mask: Tensor = None,
        decoder_inputs_embeds: Tensor = None,
        labels: Tensor = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        return self._forward_named(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            input_features=input_features,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            decoder_inputs_embeds=decoder_inputs_embeds,
            labels=labels,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
            **kwargs,
        )


class _EncoderTaskModel(PeftModel):
    def forward(  # type: ignore[override]
        self,
        input_ids: Tensor = None,
        attention_mask: Tensor = None,
        token_type_ids: Tensor = None,
        position_ids: Tensor = None,
        inputs_embeds: Tensor = None,
        labels: Tensor = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        return self._forward_named(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            labels=labels,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
            **kwargs,
        )


class PeftModelForSequenceClassification(_EncoderTaskModel):
    """The classification head (`classifier` / `score`) is trained in full and saved with the adapter."""


class PeftModelForTokenClassification(_EncoderTaskModel):
    """The token head (`classifier` / `score`) is trained in full and saved with the adapter."""


class PeftModelForQuestionAnswering(PeftModel):
    def forward(  # type: ignore[override]
        self,
        input_ids: Tensor = None,
        attention_mask: Tensor = None,
        token_type_ids: Tensor = None,
        position_ids: Tensor = None,
        inputs_embeds: Tensor = None,
        start_positions: Tensor = None,
        end_positions: Tensor = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        return self._forward_named(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            start_positions=start_positions,
            end_positions=end_positions,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
            **kwargs,
        )


class PeftModelForFeatureExtraction(PeftModel):
    def forward(  # type: ignore[override]
        self,
        input_ids: Tensor = None,
        attention_mask: Tensor = None,
        token_type_ids: Tensor = None,
        inputs_embeds: Tensor = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        return self._forward_named(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
            **kwargs,
        )


MODEL_TYPE_TO_PEFT_MODEL_MAPPING: dict[str, type[PeftModel]] = {
    "SEQ_CLS": PeftModelForSequenceClassification,
    "SEQ_2_SEQ_LM": PeftModelForSeq2SeqLM,
    "CAUSAL_LM": PeftModelForCausalLM,
    "TOKEN_CLS": PeftModelForTokenClassification,
    "QUESTION_ANS": PeftModelForQuestionAnswering,
    "FEATURE_EXTRACTION": PeftModelForFeatureExtraction,
}
