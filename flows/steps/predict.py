"""Prediction on new rows with a trained adapter, formatted exactly as training formatted its data.

`Predictor` is what the logged MLflow model runs (flows.tracking.model) and what the evaluate step
shares its generation with: one row in, in the dataset's own columns, one prediction out —

    seq_cls     {text_column: str}                  → the class name
    token_cls   {tokens_column: [word, ...]}        → one tag per word
    image_cls   {image_column: file bytes or path}  → the class name
    semantic_seg {image_column: file bytes or path} → the mask: class ids, rows × columns of the image
    asr         {audio_column: file bytes or path}  → the transcript
    causal_lm / seq2seq_lm
                the columns the format reads        → the generated text
                (chat: {messages_column: [{role, content}, ...]} ending with the turn to answer)

Prompts come from `flows.steps.data.format.RowFormat` (templates, chat templates, the special prefix,
the prompt's end kept when it is too long), so a served model sees its inputs as training did.
"""

from __future__ import annotations

from typing import Any

import torch

from flows.params import FinetuneParams

Row = dict[str, Any]


def generate(params: FinetuneParams, model: Any, tokenizer: Any, prompt_ids: list[list[int]]) -> list[str]:
    """Greedy (or beam) continuations of tokenized prompts, batched, as text without the prompt."""
    causal = params.model.task == "causal_lm"
    # Causal prompts are padded on the left, so every continuation starts right after its prompt.
    tokenizer.padding_side = "left" if causal else "right"
    device = next(model.parameters()).device
    out: list[str] = []
    size = params.train.eval_batch_size
    for start in range(0, len(prompt_ids), size):
        chunk = [{"input_ids": ids} for ids in prompt_ids[start : start + size]]
        enc = tokenizer.pad(chunk, padding=True, return_tensors="pt").to(device)
        generated = model.generate(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            max_new_tokens=params.eval.max_new_tokens,
            num_beams=params.eval.num_beams,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        if causal:
            generated = generated[:, enc["input_ids"].shape[1] :]
        out += [text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]
    return out


class Predictor:
    """Base model + adapter + tokenizer + the run's parameters, ready to predict raw rows."""

    def __init__(
        self,
        params: FinetuneParams,
        adapter_dir: str,
        tokenizer_dir: str,
        label_names: list[str] | None,
        base_dir: str | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        from flows.params import MEDIA_TASKS
        from flows.steps.model import load_base_model
        from peftcore import PeftModel

        if base_dir is not None:  # a base model stored with the adapter instead of its Hub id
            params = params.model_copy(
                update={"model": params.model.model_copy(update={"name_or_path": base_dir, "revision": None})}
            )
        self.params = params
        self.label_names = label_names
        media = params.model.task in MEDIA_TASKS
        # Image and speech models keep their processor (image processor / feature extractor +
        # tokenizer) where text models keep their tokenizer.
        self.tokenizer = (
            _processor(params.model.task, tokenizer_dir)
            if media
            else AutoTokenizer.from_pretrained(tokenizer_dir)
        )
        device = "cuda" if torch.cuda.is_available() else "cpu"
        base = load_base_model(params, label_names, device=device)
        self.model = PeftModel.from_pretrained(base, adapter_dir).to(device).eval()
        self.format = None
        if params.model.task in ("causal_lm", "seq2seq_lm"):
            from flows.steps.data.format import RowFormat

            self.format = RowFormat(params, self.tokenizer)

    def predict(self, rows: list[Row]) -> list[Any]:
        task = self.params.model.task
        with torch.inference_mode():
            if task in ("image_cls", "semantic_seg", "asr"):
                return self._media(rows)
            if task == "seq_cls":
                return self._classes(rows)
            if task == "token_cls":
                return self._tags(rows)
            return self._texts(rows)

    def _media(self, rows: list[Row]) -> list[Any]:
        """image_cls: the class name of each image; semantic_seg: the predicted mask (class ids, the
        image's height × width); asr: the transcript. Images and audio come as file bytes or paths."""
        from flows.steps.data.media import load_audio, load_image
        from flows.steps.data.media_encode import float_dtype
        from flows.steps.model import generation_language

        d, task = self.params.data, self.params.model.task
        device = next(self.model.parameters()).device
        dtype = float_dtype(self.model) or torch.float32  # a bf16 base takes bf16 pixels / features
        size = self.params.train.eval_batch_size
        if task == "asr":
            extractor = self.tokenizer.feature_extractor
            rate = int(extractor.sampling_rate)
            clips = [load_audio(v, None, rate, d.resample) for v in self._column(rows, d.audio_column)]
            texts: list[str] = []
            for start in range(0, len(clips), size):
                features = extractor(clips[start : start + size], sampling_rate=rate, return_tensors="pt")
                generated = self.model.generate(
                    input_features=features.input_features.to(device, dtype),
                    max_new_tokens=self.params.eval.max_new_tokens,
                    num_beams=self.params.eval.num_beams,
                    do_sample=False,
                    **generation_language(self.params),
                )
                decoded = self.tokenizer.tokenizer.batch_decode(generated, skip_special_tokens=True)
                texts += [text.strip() for text in decoded]
            return texts
        images = [load_image(v, None) for v in self._column(rows, d.image_column)]
        out: list[Any] = []
        for start in range(0, len(images), size):
            chunk = images[start : start + size]
            pixels = self.tokenizer(images=chunk, return_tensors="pt")["pixel_values"].to(device, dtype)
            logits = self.model(pixel_values=pixels).logits.float()
            if task == "image_cls":
                out += [self._name(int(i)) for i in logits.argmax(-1).tolist()]
                continue
            for k, image in enumerate(chunk):  # each mask at its image's own size
                full = torch.nn.functional.interpolate(
                    logits[k : k + 1], size=(image.height, image.width), mode="bilinear", align_corners=False
                )
                out.append(full.argmax(1)[0].cpu().tolist())
        return out

    def _column(self, rows: list[Row], column: str) -> list[Any]:
        missing = [i for i, row in enumerate(rows) if row.get(column) is None]
        if missing:
            raise ValueError(f"rows {missing[:10]} have no {column!r}: the model reads that column")
        return [row[column] for row in rows]

    def _encode(self, inputs: list[Any], **kwargs: Any) -> Any:
        """Classification inputs, cut as the tokenize step cut them (a `drop` policy cuts the end:
        a row to predict cannot be dropped)."""
        d = self.params.data
        self.tokenizer.truncation_side = "left" if d.truncation == "left" else "right"
        return self.tokenizer(
            inputs, truncation=True, max_length=d.max_length, padding=True, return_tensors="pt", **kwargs
        )

    def _logits(self, enc: Any) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.model(**{k: v.to(device) for k, v in enc.items()}).logits.cpu()

    def _name(self, i: int) -> str:
        names = self.label_names or []
        return names[i] if 0 <= i < len(names) else str(i)

    def _classes(self, rows: list[Row]) -> list[str]:
        texts = [str(t) for t in self._column(rows, self.params.data.text_column)]
        out: list[str] = []
        size = self.params.train.eval_batch_size
        for start in range(0, len(texts), size):
            ids = self._logits(self._encode(texts[start : start + size])).argmax(-1).tolist()
            out += [self._name(i) for i in ids]
        return out

    def _tags(self, rows: list[Row]) -> list[list[str]]:
        words = [list(w) for w in self._column(rows, self.params.data.tokens_column)]
        out: list[list[str]] = []
        size = self.params.train.eval_batch_size
        for start in range(0, len(words), size):
            chunk = words[start : start + size]
            enc = self._encode(chunk, is_split_into_words=True)
            ids = self._logits(enc).argmax(-1)
            for k in range(len(chunk)):
                tags: list[str] = []
                previous = None
                for position, word in enumerate(enc.word_ids(k)):
                    if word is not None and word != previous:  # a word's first sub-token carries its tag
                        tags.append(self._name(int(ids[k, position])))
                    previous = word
                out.append(tags)
        return out

    def _texts(self, rows: list[Row]) -> list[str]:
        assert self.format is not None
        prompts = []
        for i, row in enumerate(rows):
            try:
                prompt = self.format.inference_prompt(row)
            except (KeyError, ValueError) as err:
                raise ValueError(f"row {i}: cannot build the prompt: {type(err).__name__}: {err}") from None
            if self.params.model.task == "causal_lm":
                prompts.append(self.format.prompt_ids(prompt))
            else:  # the encoder input, cut as the tokenize step cut it
                self.tokenizer.truncation_side = (
                    "right" if self.format.truncation == "drop" else self.format.truncation
                )
                ids = self.tokenizer(prompt, truncation=True, max_length=self.params.data.max_length)[
                    "input_ids"
                ]
                prompts.append(list(ids))
        return generate(self.params, self.model, self.tokenizer, prompts)


def _processor(task: str, directory: str) -> Any:
    from transformers import AutoImageProcessor, AutoProcessor

    return (
        AutoProcessor.from_pretrained(directory)
        if task == "asr"
        else AutoImageProcessor.from_pretrained(directory)
    )
