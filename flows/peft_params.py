"""`peft`: the PEFT method of a run, one pydantic model per method, chosen by `peft.method`.

`PeftParams` is a discriminated union on `method` (default "lora"), so the Prefect form shows the
fields of the chosen method only, and a field of another method (e.g. `num_virtual_tokens` with `method: lora`) is refused naming
the methods it belongs to. Each model builds its peftcore config with `config(...)`; defaults are the
ones that train the quickstart well on CPU.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

Targets = list[str] | str | None


class _Method(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)
    CONFIG: ClassVar[str]
    # The peak learning rate a run of this method gets when `train.learning_rate` is left empty. Methods
    # train very different numbers of weights from very different starting points (a zero update, a
    # unit scale, vocabulary embeddings), so one rate for all leaves most of them untrained.
    LEARNING_RATE: ClassVar[float]

    @model_validator(mode="before")
    @classmethod
    def _fields_of_other_methods(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for key in data:
            if key in cls.model_fields:
                continue
            owners = [m for m, c in METHOD_CLASSES.items() if key in c.model_fields]
            if owners:
                method = cls.model_fields["method"].default
                raise ValueError(
                    f"peft.{key} is a field of method {' / '.join(owners)}, not of method {method!r}: set "
                    f"peft.method to {owners[0]!r} or remove peft.{key}"
                )
        return data

    def config_kwargs(self) -> dict[str, Any]:
        """The config fields (everything but `method`, empty optional values left out)."""
        out = self.model_dump(exclude={"method"})
        return {k: v for k, v in out.items() if v is not None and v != {}}

    def config(self, task_type: str, base_model_name_or_path: str | None, revision: str | None) -> Any:
        """The peftcore config this method's fields describe."""
        import peftcore

        cls = getattr(peftcore, self.CONFIG)
        return cls(
            task_type=task_type,
            base_model_name_or_path=base_model_name_or_path,
            revision=revision,
            **self.config_kwargs(),
        )

    @property
    def rank(self) -> int | None:
        """The method's size knob as a sweep varies it (rank, or virtual tokens); None when it has none."""
        return None


class LoraParams(_Method):
    model_config = ConfigDict(title="lora")  # the label of its button in the Prefect form
    CONFIG: ClassVar[str] = "LoraConfig"
    LEARNING_RATE: ClassVar[float] = 2e-4
    method: Literal["lora"] = Field("lora", description="PEFT method")
    r: int = Field(8, gt=0, description="LoRA rank")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (scaling = alpha / r)")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the adapter input")
    target_modules: Targets = Field(
        None, description="Module names, a regex, or 'all-linear'; empty = the architecture default"
    )
    exclude_modules: Targets = Field(None, description="Modules to leave out")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases to train")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha / sqrt(r)")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA)")
    init_lora_weights: bool | Literal["gaussian", "pissa", "olora"] = Field(
        True, description="True, 'gaussian', 'pissa', 'olora' or False"
    )
    modules_to_save: list[str] | None = Field(None, description="Extra modules trained in full")
    layers_to_transform: list[int] | None = Field(None, description="Only adapt these layer indices")
    layers_pattern: str | None = Field(None, description="Name of the layer list, with layers_to_transform")
    # Optional rather than {} by default: Prefect's form holds an empty dict as a JSON placeholder that
    # its JSON editor then refuses to submit.
    rank_pattern: dict[str, int] | None = Field(None, description="Per-module rank overrides")
    alpha_pattern: dict[str, float] | None = Field(None, description="Per-module alpha overrides")

    def config_kwargs(self) -> dict[str, Any]:
        out = self.model_dump(exclude={"method"})
        out.update(rank_pattern=self.rank_pattern or {}, alpha_pattern=self.alpha_pattern or {})
        return {k: (v or None) if k in ("target_modules", "exclude_modules") else v for k, v in out.items()}

    @property
    def rank(self) -> int | None:
        return self.r


class IA3Params(_Method):
    model_config = ConfigDict(title="ia3")  # the label of its button in the Prefect form
    CONFIG: ClassVar[str] = "IA3Config"
    LEARNING_RATE: ClassVar[float] = 3e-3
    method: Literal["ia3"] = "ia3"
    target_modules: Targets = Field(None, description="Modules to rescale; empty = the architecture default")
    feedforward_modules: Targets = Field(
        None, description="Targets whose input is scaled; empty = the architecture default"
    )
    exclude_modules: Targets = Field(None, description="Modules to leave out")
    modules_to_save: list[str] | None = Field(None, description="Extra modules trained in full")
    init_ia3_weights: bool = Field(True, description="Start every vector at 1 (the identity)")


class _Lycoris(_Method):
    r: int = Field(8, gt=0, description="Rank of the factors")
    alpha: float = Field(8.0, gt=0, description="Scaling numerator (scaling = alpha / r)")
    rank_dropout: float = Field(0.0, ge=0, lt=1, description="Training: drop rows of the update")
    module_dropout: float = Field(0.0, ge=0, lt=1, description="Training: skip the adapter for a step")
    use_effective_conv2d: bool = Field(False, description="Factor k×k conv kernels through a core tensor")
    target_modules: Targets = Field(
        None, description="Linear / Conv modules; empty = the architecture default"
    )
    exclude_modules: Targets = Field(None, description="Modules to leave out")
    modules_to_save: list[str] | None = Field(None, description="Extra modules trained in full")
    init_weights: bool = Field(True, description="Start the update at zero")

    @property
    def rank(self) -> int | None:
        return self.r


class LoHaParams(_Lycoris):
    model_config = ConfigDict(title="loha")  # the label of its button in the Prefect form
    CONFIG: ClassVar[str] = "LoHaConfig"
    LEARNING_RATE: ClassVar[float] = 1e-3
    method: Literal["loha"] = "loha"


class LoKrParams(_Lycoris):
    model_config = ConfigDict(title="lokr")  # the label of its button in the Prefect form
    CONFIG: ClassVar[str] = "LoKrConfig"
    LEARNING_RATE: ClassVar[float] = 1e-3
    method: Literal["lokr"] = "lokr"
    decompose_both: bool = Field(False, description="Also factor the left Kronecker factor")
    decompose_factor: int = Field(-1, description="Split dimensions near this factor (-1: square root)")
    rank_dropout_scale: bool = Field(False, description="Rescale the rows rank_dropout keeps")


class AdaLoraParams(_Method):
    model_config = ConfigDict(title="adalora")  # the label of its button in the Prefect form
    CONFIG: ClassVar[str] = "AdaLoraConfig"
    LEARNING_RATE: ClassVar[float] = 1e-3
    method: Literal["adalora"] = "adalora"
    init_r: int = Field(12, gt=0, description="Rank of every layer at the start")
    target_r: int = Field(4, gt=0, description="Average rank per layer at the end")
    lora_alpha: float = Field(16.0, gt=0, description="Scaling numerator")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the adapter input")
    total_step: int | None = Field(
        None,
        gt=0,
        description="Optimizer steps of the run; empty = computed from the data and train settings",
    )
    tinit: int = Field(0, ge=0, description="Warm-up steps before pruning")
    tfinal: int = Field(0, ge=0, description="Final steps at the target budget")
    deltaT: int = Field(1, gt=0, description="Prune every deltaT steps")
    beta1: float = Field(0.85, gt=0, lt=1, description="Smoothing of the sensitivity")
    beta2: float = Field(0.85, gt=0, lt=1, description="Smoothing of its uncertainty")
    orth_reg_weight: float = Field(0.5, ge=0, description="Weight of the orthogonality penalty")
    target_modules: Targets = Field(None, description="Modules to adapt; empty = the architecture default")
    modules_to_save: list[str] | None = Field(None, description="Extra modules trained in full")

    @property
    def rank(self) -> int | None:
        return self.target_r


class _Prompt(_Method):
    num_virtual_tokens: int = Field(20, gt=0, description="Virtual tokens learned")
    modules_to_save: list[str] | None = Field(None, description="Extra modules trained in full")

    @property
    def rank(self) -> int | None:
        return self.num_virtual_tokens


class PromptTuningParams(_Prompt):
    model_config = ConfigDict(title="prompt_tuning")  # the label of its button in the Prefect form
    CONFIG: ClassVar[str] = "PromptTuningConfig"
    LEARNING_RATE: ClassVar[float] = 3e-2
    method: Literal["prompt_tuning"] = "prompt_tuning"
    prompt_tuning_init: Literal["RANDOM", "SAMPLE_VOCAB", "TEXT"] = Field(
        "SAMPLE_VOCAB", description="Start from random vocabulary rows, N(0,1), or a text's tokens"
    )
    prompt_tuning_init_text: str | None = Field(None, description="The text for TEXT init")

    @model_validator(mode="after")
    def _text(self) -> PromptTuningParams:
        if self.prompt_tuning_init == "TEXT" and not self.prompt_tuning_init_text:
            raise ValueError(
                "peft.prompt_tuning_init='TEXT' needs peft.prompt_tuning_init_text (the words whose embeddings "
                "start the prompt), or use 'SAMPLE_VOCAB'"
            )
        return self

    def config(self, task_type: str, base_model_name_or_path: str | None, revision: str | None) -> Any:
        import peftcore

        kwargs = self.config_kwargs()
        if self.prompt_tuning_init == "TEXT":  # the base model's own tokenizer reads the text
            kwargs["tokenizer_name_or_path"] = base_model_name_or_path
        return peftcore.PromptTuningConfig(
            task_type=task_type, base_model_name_or_path=base_model_name_or_path, revision=revision, **kwargs
        )


class PTuningParams(_Prompt):
    model_config = ConfigDict(title="p_tuning")  # the label of its button in the Prefect form
    CONFIG: ClassVar[str] = "PromptEncoderConfig"
    LEARNING_RATE: ClassVar[float] = 1e-3
    method: Literal["p_tuning"] = "p_tuning"
    encoder_reparameterization_type: Literal["MLP", "LSTM"] = Field("MLP", description="The prompt encoder")
    encoder_hidden_size: int = Field(128, gt=0, description="The encoder's hidden size")
    encoder_num_layers: int = Field(2, gt=0, description="LSTM layers")
    encoder_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout between LSTM layers")


class PrefixTuningParams(_Prompt):
    model_config = ConfigDict(title="prefix_tuning")  # the label of its button in the Prefect form
    CONFIG: ClassVar[str] = "PrefixTuningConfig"
    LEARNING_RATE: ClassVar[float] = 1e-2
    method: Literal["prefix_tuning"] = "prefix_tuning"
    prefix_projection: bool = Field(False, description="Produce the prefix with a two-layer MLP")
    encoder_hidden_size: int | None = Field(None, gt=0, description="The MLP's hidden size (projection only)")


METHOD_CLASSES: dict[str, type[_Method]] = {
    "lora": LoraParams,
    "ia3": IA3Params,
    "loha": LoHaParams,
    "lokr": LoKrParams,
    "adalora": AdaLoraParams,
    "prompt_tuning": PromptTuningParams,
    "p_tuning": PTuningParams,
    "prefix_tuning": PrefixTuningParams,
}
MethodName = Literal["lora", "ia3", "loha", "lokr", "adalora", "prompt_tuning", "p_tuning", "prefix_tuning"]


def _method_of(value: Any) -> str:
    """The discriminator: `method`, "lora" when a recipe leaves it out (recipes predating the choice)."""
    if isinstance(value, dict):
        return str(value.get("method", "lora"))
    return str(getattr(value, "method", "lora"))


PeftParams = Annotated[
    Annotated[LoraParams, Tag("lora")]
    | Annotated[IA3Params, Tag("ia3")]
    | Annotated[LoHaParams, Tag("loha")]
    | Annotated[LoKrParams, Tag("lokr")]
    | Annotated[AdaLoraParams, Tag("adalora")]
    | Annotated[PromptTuningParams, Tag("prompt_tuning")]
    | Annotated[PTuningParams, Tag("p_tuning")]
    | Annotated[PrefixTuningParams, Tag("prefix_tuning")],
    Discriminator(_method_of),
]
