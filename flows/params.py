"""`FinetuneParams`: the one parameter model of the pipeline (the Prefect UI renders it as a form).

Everything a run needs is here, validated before any model or data loads. Secrets never are: the
Hub token comes from `HF_TOKEN`, the tracking credentials from MLflow's own environment variables.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flows.peft_params import LoraParams, PeftParams

BUNDLED_MINILM = "bundled:all-MiniLM-L6-v2"
BUNDLED_MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
Task = Literal["seq_cls", "token_cls", "causal_lm", "seq2seq_lm", "image_cls", "semantic_seg", "asr"]
# Image and speech adapters carry no task_type, as in HF PEFT's task guides (its TaskType has none for
# them); their adapter_config.json records the base model's class instead (auto_mapping).
TASK_TYPES: dict[str, str | None] = {
    "seq_cls": "SEQ_CLS",
    "token_cls": "TOKEN_CLS",
    "causal_lm": "CAUSAL_LM",
    "seq2seq_lm": "SEQ_2_SEQ_LM",
    "image_cls": None,
    "semantic_seg": None,
    "asr": None,
}
# Tasks whose inputs are images or audio, prepared by the model's processor instead of a tokenizer.
MEDIA_TASKS = ("image_cls", "semantic_seg", "asr")
_PROMPT_METHODS = ("prompt_tuning", "p_tuning", "prefix_tuning")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class ModelParams(_Strict):
    name_or_path: str = Field(
        BUNDLED_MINILM,
        description=f"Hub id or local path of the base model; '{BUNDLED_MINILM}' is the bundled MiniLM",
    )
    revision: str | None = Field(None, description="Base model revision (branch, tag or commit) on the Hub")
    hub_id: str | None = Field(
        None, description="The base model's Hub id, recorded in the adapter when name_or_path is a local path"
    )
    task: Task = Field(
        "seq_cls",
        description="seq_cls, token_cls, causal_lm, seq2seq_lm, image_cls (image classification), "
        "semantic_seg (semantic segmentation) or asr (speech recognition)",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Base model weights dtype; auto = bf16 on a capable GPU, else float32"
    )
    trust_remote_code: bool = Field(False, description="Allow model code from the Hub (off by default)")
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none",
        description="Load the base quantized with bitsandbytes (QLoRA): 4bit = NF4 with double quantization, "
        "computing in model.dtype; 8bit = LLM.int8. The adapter stays in float, in HF's format",
    )


DataFormat = Literal["text", "instruction", "chat", "completion"]


class DataParams(_Strict):
    dataset: str | None = Field(None, description="Hub dataset id (or a local dataset directory)")
    config_name: str | None = Field(None, description="Dataset configuration name")
    revision: str | None = Field(None, description="Dataset revision on the Hub")
    data_dir: str | None = Field(
        None, description="Folder of the Hub dataset repo to read, e.g. one config of a parquet export"
    )
    train_file: str | None = Field(None, description="Local train file: .json, .jsonl, .csv or .parquet")
    validation_file: str | None = Field(None, description="Local validation file (model selection)")
    test_file: str | None = Field(None, description="Local test file (else test_fraction of the train data)")
    train_split: str = Field("train", description="Split used for training")
    validation_split: str = Field(
        "validation", description="Split used for model selection, when the dataset has it"
    )
    test_split: str = Field("test", description="Held-out split, scored once at the end")
    validation_fraction: float | None = Field(
        None, gt=0, lt=1, description="Carve the validation split from train (seeded, stable across runs)"
    )
    test_fraction: float | None = Field(
        None, gt=0, lt=1, description="Carve the test split from train when there is no test split"
    )
    format: DataFormat | None = Field(
        None,
        description="text, instruction (template + target column), chat (a messages column) or completion "
        "(prompt + completion columns); empty = text for classification, instruction for LM tasks",
    )
    text_column: str = Field(
        "text", description="Input text column (classification, or LM input); the transcript for asr"
    )
    image_column: str = Field(
        "image", description="Image column (image_cls, semantic_seg): an Image feature or file paths"
    )
    mask_column: str = Field(
        "annotation",
        description="Segmentation mask column (semantic_seg): one class id per pixel, the image's size",
    )
    audio_column: str = Field("audio", description="Audio column (asr): an Audio feature or file paths")
    language: str | None = Field(
        None,
        description="asr: the spoken language, e.g. english (Whisper: the transcripts' prefix tokens and "
        "generation name it); empty = no language token",
    )
    resample: bool = Field(
        True, description="asr: resample audio to the feature extractor's rate (off: other rates fail)"
    )
    reduce_labels: bool = Field(
        False,
        description="semantic_seg: mask id 0 means unlabelled (not scored) and ids 1..N are classes 0..N-1 "
        "(ADE20K / scene_parse_150)",
    )
    augment: bool = Field(
        False, description="image tasks: random horizontal flips of training images (and their masks)"
    )
    label_column: str = Field("label", description="Label column (class names or ids; tags for token_cls)")
    tokens_column: str = Field("tokens", description="Pre-split words column for token classification")
    target_column: str | None = Field(None, description="Target text column for causal/seq2seq LM")
    prompt_column: str = Field("prompt", description="Prompt column of the completion format")
    completion_column: str = Field("completion", description="Completion column of the completion format")
    messages_column: str = Field("messages", description="Conversation column of the chat format")
    prompt_template: str | None = Field(
        None,
        description="Prompt built from columns: Jinja ('{{ text }}', '{% if input %}...{% endif %}') or "
        "str.format ('Review: {text}\\nSentiment:')",
    )
    chat_template: str | None = Field(
        None, description="Jinja chat template (inline, or a file path) when the tokenizer has none"
    )
    train_on: Literal["assistant", "last_assistant", "all"] = Field(
        "assistant",
        description="Tokens the loss counts: assistant turns / the completion, the last assistant turn only, "
        "or every token",
    )
    truncation: Literal["left", "right", "drop"] | None = Field(
        None,
        description="Rows over max_length: left drops their start (keeps the completion), right their end, "
        "drop removes them; empty = left for prompt/completion data, right for text",
    )
    packing: bool = Field(
        False,
        description="Causal LM: pack each batch into one padding-free row (no attention across examples)",
    )
    label_names: list[str] | None = Field(
        None, description="Class names in id order (default: sorted labels)"
    )
    max_length: int = Field(128, ge=8, le=32768, description="Max tokens per example (prompt + target)")
    max_target_length: int = Field(64, ge=1, le=8192, description="Max target tokens (seq2seq)")

    @model_validator(mode="after")
    def _one_source(self) -> DataParams:
        if (self.dataset is None) == (self.train_file is None):
            raise ValueError("set exactly one of data.dataset (Hub id) or data.train_file (local file)")
        for name in ("train_file", "validation_file", "test_file"):
            value = getattr(self, name)
            if value is not None and Path(value).suffix.lower() not in (
                ".json",
                ".jsonl",
                ".csv",
                ".parquet",
            ):
                raise ValueError(f"data.{name}={value!r}: use a .json, .jsonl, .csv or .parquet file")
        if self.validation_file is not None and self.validation_fraction is not None:
            raise ValueError(
                "set one of data.validation_file or data.validation_fraction, not both: they are two "
                "sources of the same split"
            )
        for name in ("validation_split", "test_split"):
            if getattr(self, name) == self.train_split:
                raise ValueError(f"data.{name}={self.train_split!r} must differ from data.train_split")
        return self

    def has_validation_source(self) -> bool | None:
        """True/False when the parameters alone decide whether a validation split exists; None when
        only the dataset can tell (a Hub or saved dataset may have a split named validation_split)."""
        if self.validation_file is not None or self.validation_fraction is not None:
            return True
        return None if self.dataset is not None else False

    def resolved_format(self, task: str) -> DataFormat:
        """data.format, or the one a config without it always meant: text (classification), else
        instruction (prompt_template or text_column, then target_column)."""
        if self.format is not None:
            return self.format
        return "text" if task in ("seq_cls", "token_cls", *MEDIA_TASKS) else "instruction"


class TrainParams(_Strict):
    epochs: float = Field(3, gt=0, description="Training epochs (ignored when max_steps > 0)")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: use epochs)")
    learning_rate: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Peak learning rate; empty = the PEFT method's own default (lora 2e-4, ia3 3e-3, "
        "loha / lokr / adalora / p_tuning 1e-3, prefix_tuning 1e-2, prompt_tuning 3e-2)",
    )
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field("linear")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of steps for warmup")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    batch_size: int = Field(16, gt=0, description="Per-device train batch size")
    eval_batch_size: int = Field(64, gt=0, description="Per-device eval batch size")
    gradient_accumulation_steps: int = Field(1, gt=0)
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 on a capable GPU, else fp32"
    )
    seed: int = Field(42, description="Seed for data order, dropout and adapter init")
    eval_every: Literal["epoch", "steps", "no"] = Field(
        "epoch", description="When to evaluate during training"
    )
    eval_steps: int = Field(50, gt=0, description="Evaluation interval when eval_every=steps")
    save_steps: int = Field(100, gt=0, description="Checkpoint interval in steps (adapter-only checkpoints)")
    logging_steps: int = Field(10, gt=0, description="Log train_loss every N steps")
    early_stopping_patience: int | None = Field(
        None, gt=0, description="Stop after N validation evals without improvement of metric_for_best_model"
    )
    load_best_model_at_end: bool = Field(
        False, description="Keep the checkpoint with the best metric_for_best_model, not the last one"
    )
    metric_for_best_model: str = Field(
        "val_loss", description="Validation metric that early stopping and the best checkpoint follow"
    )
    group_by_length: bool = Field(
        False, description="Batch examples of similar length together (less padding, less shuffling)"
    )
    num_threads: int | None = Field(None, gt=0, description="CPU threads for torch (default: all cores)")
    launcher: Literal["none", "accelerate"] = Field(
        "none",
        description="none: train in the flow's process; accelerate: `accelerate launch` (DDP/FSDP/DeepSpeed)",
    )
    num_processes: int = Field(
        1, ge=1, le=1024, description="Processes for launcher=accelerate (GPUs, or CPU processes with gloo)"
    )
    accelerate_config: str | None = Field(
        None, description="accelerate config file for launcher=accelerate, e.g. infra/accelerate/ddp.yaml"
    )
    timeout_minutes: float | None = Field(
        None,
        gt=0,
        description="Stop training (every process it started) after this long; the run fails and a rerun "
        "resumes from its newest checkpoint",
    )

    @field_validator("metric_for_best_model")
    @classmethod
    def _selection_metric(cls, value: str) -> str:
        if not value.startswith("val_") or value == "val_":
            raise ValueError(
                f"{value!r}: selection uses the validation split, so name a val_<metric>, e.g. val_loss or "
                "val_accuracy (eval_<metric> are the test metrics, scored once at the end)"
            )
        return value

    def selection_features(self) -> list[str]:
        """The parameters set here that pick a model on the validation split (empty: none)."""
        features = {
            "train.early_stopping_patience": self.early_stopping_patience,
            "train.load_best_model_at_end": self.load_best_model_at_end,
        }
        return [name for name, on in features.items() if on]

    @model_validator(mode="after")
    def _launch(self) -> TrainParams:
        if self.launcher == "none" and (self.num_processes > 1 or self.accelerate_config):
            raise ValueError(
                "train.num_processes > 1 and train.accelerate_config need train.launcher=accelerate"
            )
        return self


class EvalParams(_Strict):
    metrics: list[str] = Field(
        default_factory=lambda: ["accuracy"], description="Metric names (shipped or Hub)"
    )
    max_new_tokens: int = Field(32, gt=0, description="Generation length for generative tasks")
    num_beams: int = Field(1, gt=0, description="Beam search width for generation")
    num_logged_predictions: int = Field(
        20, ge=0, description="Prediction rows shown on the flow run page (MLflow gets every row)"
    )


class PublishParams(_Strict):
    repo_id: str | None = Field(None, description="Hub repo 'user/name'; empty = do not publish")
    private: bool = Field(True, description="Create the repo private")
    endpoint: str | None = Field(None, description="Hub endpoint (default: HF_ENDPOINT or the public Hub)")
    commit_message: str = Field("Upload adapter trained with peftflow")

    @field_validator("repo_id")
    @classmethod
    def _repo(cls, value: str | None) -> str | None:
        if value and (value.count("/") != 1 or value.startswith("/") or value.endswith("/")):
            raise ValueError(f"publish.repo_id={value!r} must look like 'user/name'")
        return value or None


class TrackingParams(_Strict):
    experiment: str = Field("peftflow", description="MLflow experiment name")
    run_name: str | None = Field(None, description="MLflow run name (default: generated)")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra MLflow tags")
    log_model: bool = Field(
        True, description="Log the adapter as an MLflow model (pyfunc) that predicts from raw rows"
    )
    embed_base_model: bool = Field(
        False, description="Store the base model inside the MLflow model instead of referencing its Hub id"
    )
    system_metrics: bool = Field(True, description="Log CPU, memory, disk, network (and GPU) use as system/*")
    flush_timeout_s: float = Field(
        300.0,
        ge=0,
        description="How long the end of training waits for an unreachable MLflow server to take the "
        "training metrics held back meanwhile; past it the run fails, its checkpoints kept for a rerun",
    )


class PromotionParams(_Strict):
    """How `retrain` decides whether a new adapter replaces the registry's `champion`."""

    registered_model: str = Field(
        "quickstart-sentiment-lora", min_length=1, description="MLflow registered model name"
    )
    metric: str = Field(
        "val_accuracy", description="Validation metric (val_<name>) compared against the champion's"
    )
    direction: Literal["maximize", "minimize"] = Field("maximize", description="Which way is better")
    min_delta: float = Field(0.0, ge=0, description="Required improvement over the champion")
    compare_on: Literal["current_data", "recorded"] = Field(
        "current_data",
        description="current_data: score the champion on this run's validation split too (same data for both); "
        "recorded: use the metric the champion's run logged",
    )
    force: bool = Field(False, description="Train even when the data has not changed since the last run")

    @field_validator("registered_model")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError("use letters, digits, '.', '_' and '-' (starting with a letter or digit)")
        return value


# Every PEFT method, plus the LoRA variants DoRA and rsLoRA as methods of their own.
SweepMethod = Literal[
    "lora", "dora", "rslora", "ia3", "loha", "lokr", "adalora", "prompt_tuning", "p_tuning", "prefix_tuning"
]


class SweepGrid(_Strict):
    """The trials of a `sweep`: every combination of methods × ranks × learning rates."""

    methods: list[SweepMethod] = Field(
        default_factory=lambda: list[SweepMethod](["lora", "dora"]),
        min_length=1,
        description="PEFT methods (and the LoRA variants dora, rslora) to try",
    )
    ranks: list[int] = Field(
        default_factory=lambda: [4, 8],
        min_length=1,
        description="Ranks (virtual tokens for prompt methods, target_r for AdaLoRA; IA3 has none)",
    )
    learning_rates: list[float] = Field(
        default_factory=lambda: [3e-3],
        description="Peak learning rates; empty = each trial's own: the recipe's train.learning_rate, or "
        "its method's default when the recipe leaves it empty",
    )
    metric: str = Field("val_accuracy", description="Validation metric (val_<name>) the trials are ranked by")
    direction: Literal["maximize", "minimize"] = Field("maximize")
    max_trials: int = Field(24, gt=0, le=256, description="Refuse grids larger than this")

    @field_validator("ranks")
    @classmethod
    def _ranks(cls, value: list[int]) -> list[int]:
        if any(r <= 0 for r in value):
            raise ValueError("every rank must be > 0")
        return value

    @field_validator("learning_rates")
    @classmethod
    def _lrs(cls, value: list[float]) -> list[float]:
        if any(not 0 < lr < 1 for lr in value):
            raise ValueError("every learning rate must be in (0, 1)")
        return value

    @model_validator(mode="after")
    def _size(self) -> SweepGrid:
        n = len(self.methods) * len(self.ranks) * max(1, len(self.learning_rates))
        if n > self.max_trials:
            raise ValueError(f"the grid has {n} trials, more than max_trials={self.max_trials}")
        return self


def _methods_as_any_of(schema: dict[str, Any]) -> None:
    """Publish the `peft` choice as `anyOf`: Prefect's run form renders anyOf as one button per method
    (labelled by its title) with that method's fields, and falls back to a raw JSON box for oneOf.
    Each method has its own `method` constant and forbids other fields; the flow's own validation
    (the discriminator: no `method` means LoRA) then decides, as it does for a YAML recipe."""
    peft = schema.get("properties", {}).get("peft", {})
    if "oneOf" in peft:
        peft["anyOf"] = peft.pop("oneOf")
        peft.pop("discriminator", None)


class FinetuneParams(_Strict):
    """All parameters of one fine-tuning run."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, validate_default=True, json_schema_extra=_methods_as_any_of
    )

    model: ModelParams = Field(default_factory=ModelParams)
    data: DataParams
    peft: PeftParams = Field(default_factory=LoraParams)
    train: TrainParams = Field(default_factory=TrainParams)
    eval: EvalParams = Field(default_factory=EvalParams)
    publish: PublishParams = Field(default_factory=PublishParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    output_dir: str = Field("outputs", description="Where adapters, checkpoints and the data cache go")

    @model_validator(mode="after")
    def _consistent(self) -> FinetuneParams:
        d, t, task = self.data, self.train, self.model.task
        fmt = d.resolved_format(task)
        allowed = {
            "seq_cls": ("text",),
            "token_cls": ("text",),
            "causal_lm": ("text", "instruction", "chat", "completion"),
            "seq2seq_lm": ("instruction", "completion"),
            "image_cls": ("text",),
            "semantic_seg": ("text",),
            "asr": ("text",),
        }[task]
        if fmt not in allowed:
            raise ValueError(
                f"data.format={fmt!r} does not fit model.task={task!r}: use one of {list(allowed)}"
            )
        if fmt == "text" and task == "causal_lm" and set(self.eval.metrics) - {"perplexity"}:
            raise ValueError(
                f"data.format='text' on a causal LM has no prompt to generate from: it is scored by "
                f"eval.metrics=[perplexity] (got {self.eval.metrics})"
            )
        if fmt == "instruction" and not d.target_column:
            raise ValueError(
                f"model.task={task!r} needs data.target_column (the text to generate); "
                "data.prompt_template shapes the input"
            )
        if task in MEDIA_TASKS and self.peft.method in _PROMPT_METHODS:
            raise ValueError(
                f"peft.method={self.peft.method!r} prepends virtual tokens to text; model.task={task!r} "
                "reads images or audio: use an adapter method (lora, ia3, loha, lokr, adalora)"
            )
        if task == "semantic_seg" and set(self.eval.metrics) - {"mean_iou"}:
            raise ValueError(
                f"model.task='semantic_seg' is scored by eval.metrics=[mean_iou] (it also reports mean and "
                f"overall pixel accuracy); got {self.eval.metrics}"
            )
        if d.language and task != "asr":
            raise ValueError(f"data.language names the spoken language of asr data; model.task={task!r}")
        if d.reduce_labels and task != "semantic_seg":
            raise ValueError(
                f"data.reduce_labels maps segmentation mask ids; model.task={task!r} has no masks"
            )
        if d.augment and task not in ("image_cls", "semantic_seg"):
            raise ValueError(f"data.augment flips images; model.task={task!r} has none")
        if d.packing and task != "causal_lm":
            raise ValueError(f"data.packing packs causal LM examples; model.task={task!r} does not use it")
        if d.train_on == "all" and task == "seq2seq_lm":
            raise ValueError(
                "data.train_on='all' needs model.task='causal_lm': a seq2seq model learns its target"
            )
        if d.chat_template and fmt != "chat":
            raise ValueError(f"data.chat_template is used by data.format='chat' only (format is {fmt!r})")
        if t.gradient_checkpointing and self.peft.method == "prefix_tuning":
            raise ValueError(
                "train.gradient_checkpointing does not work with peft.method='prefix_tuning': the "
                "checkpointed layers are recomputed without the prefix. Set train.gradient_checkpointing "
                "to false, or use prompt_tuning / p_tuning (they prefix the input embeddings instead)"
            )
        selecting = t.selection_features()
        if selecting and t.eval_every == "no":
            raise ValueError(f"{' and '.join(selecting)} need train.eval_every 'epoch' or 'steps'")
        if selecting and d.has_validation_source() is False:
            raise ValueError(
                f"{' and '.join(selecting)} select on the validation split, and this run has none: set "
                "data.validation_fraction (carved from train) or data.validation_file; the test split is "
                "never used for selection"
            )
        return self

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], overrides: list[str] | None = None) -> FinetuneParams:
        """Load a YAML config and apply `key.sub=value` overrides (values parsed as YAML)."""
        text = Path(path).read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the config must be a YAML mapping")
        for item in overrides or []:
            apply_override(data, item)
        return cls.model_validate(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @property
    def learning_rate(self) -> float:
        """The run's peak learning rate: `train.learning_rate`, or the PEFT method's default."""
        return self.train.learning_rate or self.peft.LEARNING_RATE

    def flat(self) -> dict[str, Any]:
        """Dotted-key view for MLflow params (`peft.r`, `train.learning_rate`, ...); the learning rate
        is the one the run uses, its method's default when the recipe leaves it empty."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict) and value:
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        walk("", self.model_dump(mode="json"))
        out["train.learning_rate"] = self.learning_rate
        return out


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one `a.b.c=value` override to a nested dict."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key.sub=value, e.g. peft.r=16")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {item!r}: {part!r} is not a section")
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
