"""Data formats of the tokenize step: instruction (Jinja templates), completion, text, chat.

What each example trains on is read back by decoding its labels; over-long rows follow the truncation
policy and are counted; bad conversations and templates fail before anything is tokenized.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_from_disk

from flows.params import FinetuneParams
from flows.steps import data
from flows.steps.data import encode
from flows.steps.model import load_tokenizer
from tests.flows import fixtures

CONVERSATION = [
    {"role": "system", "content": "You answer in one word."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris"},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome"},
]
ALPACA = (
    "### Instruction:\n{{ instruction }}\n\n"
    "{% if input %}### Input:\n{{ input }}\n\n{% endif %}"
    "### Response:\n"
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    return {task: fixtures.model_dir(root, task) for task in ("chat", "causal_lm", "seq2seq_lm")}


@pytest.fixture
def encoder_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The splits whose map function was built: empty when nothing was tokenized."""
    calls: list[str] = []
    real = encode.encoder

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(encode, "encoder", counting)
    return calls


def _params(model: str, task: str = "causal_lm", **data_kw: Any) -> FinetuneParams:
    return FinetuneParams(model={"name_or_path": model, "task": task}, data=data_kw)


def _chat_file(root: Path, conversations: list[list[dict[str, Any]]], name: str = "chat.jsonl") -> str:
    return fixtures.write_jsonl(root / name, [{"messages": c} for c in conversations])


def _spans(labels: list[int]) -> list[list[int]]:
    """The runs of trained (not -100) positions, as token lists."""
    spans: list[list[int]] = []
    previous = -100
    for token in labels:
        if token != -100:
            if previous == -100:
                spans.append([])
            spans[-1].append(token)
        previous = token
    return spans


# -- chat --------------------------------------------------------------------------------------------
def test_chat_labels_are_exactly_every_assistant_turn(tmp_path: Path, models: dict[str, str]) -> None:
    train = _chat_file(tmp_path, [CONVERSATION] * 3)
    params = _params(models["chat"], train_file=train, test_file=train, format="chat")
    result = data.tokenize(params, str(tmp_path / "cache"))
    row = load_from_disk(result.path)["train"][0]
    tok = load_tokenizer(params)
    # The whole conversation is the input, rendered by the tokenizer's chat template...
    assert tok.decode(row["input_ids"]) == tok.apply_chat_template(CONVERSATION, tokenize=False).rstrip()
    # ...and the loss counts the assistant turns only: each answer and its end-of-turn token.
    assert [tok.decode(span) for span in _spans(row["labels"])] == ["Paris<|im_end|>", "Rome<|im_end|>"]


def test_chat_train_on_last_assistant_or_all(tmp_path: Path, models: dict[str, str]) -> None:
    train = _chat_file(tmp_path, [CONVERSATION] * 2)
    tok = load_tokenizer(_params(models["chat"], train_file=train, test_file=train, format="chat"))
    last = _params(
        models["chat"], train_file=train, test_file=train, format="chat", train_on="last_assistant"
    )
    row = load_from_disk(data.tokenize(last, str(tmp_path / "c1")).path)["train"][0]
    assert [tok.decode(span) for span in _spans(row["labels"])] == ["Rome<|im_end|>"]
    every = _params(models["chat"], train_file=train, test_file=train, format="chat", train_on="all")
    row = load_from_disk(data.tokenize(every, str(tmp_path / "c2")).path)["train"][0]
    assert row["labels"] == row["input_ids"]


def test_chat_evaluation_prompt_is_the_conversation_before_the_last_answer(
    tmp_path: Path, models: dict[str, str]
) -> None:
    train = _chat_file(tmp_path, [CONVERSATION] * 2)
    params = _params(models["chat"], train_file=train, test_file=train, format="chat")
    test = load_from_disk(data.tokenize(params, str(tmp_path / "cache")).path)["test"][0]
    tok = load_tokenizer(params)
    expected = tok.apply_chat_template(CONVERSATION[:-1], tokenize=False, add_generation_prompt=True)
    assert test["prompt"] == expected and expected.endswith("<|im_start|>assistant\n")
    assert test["reference"] == "Rome"
    assert test["prompt_ids"] == tok(expected, add_special_tokens=False)["input_ids"]


def test_chat_template_from_the_parameters_inline_or_file(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    tok = fixtures.chat_tokenizer(template=None)
    tok.save_pretrained(bare)
    fixtures.tiny_model("chat", tok).save_pretrained(bare)
    train = _chat_file(tmp_path, [CONVERSATION] * 2)
    # No template on the tokenizer and none given: refused before tokenizing, naming the fix.
    with pytest.raises(ValueError, match=r"has none: set data\.chat_template"):
        data.tokenize(
            _params(str(bare), train_file=train, test_file=train, format="chat"), str(tmp_path / "c")
        )
    assert not any((tmp_path / "c").iterdir())
    # A template of our own, inline and from a file: the same tokens.
    custom = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}<|im_end|>{% endfor %}"
    custom += "{% if add_generation_prompt %}[assistant] {% endif %}"
    (tmp_path / "t.jinja").write_text(custom)
    rows = []
    for i, template in enumerate((custom, str(tmp_path / "t.jinja"))):
        params = _params(str(bare), train_file=train, test_file=train, format="chat", chat_template=template)
        rows.append(load_from_disk(data.tokenize(params, str(tmp_path / f"c{i}")).path)["train"][0])
    assert rows[0] == rows[1]
    assert [tok.decode(s) for s in _spans(rows[0]["labels"])] == ["Paris<|im_end|>", "Rome<|im_end|>"]
    assert tok.decode(rows[0]["input_ids"]).startswith("[system] You answer in one word.<|im_end|>[user]")


BAD_CONVERSATIONS = {
    "unknown role": (
        [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}],
        r"row 1 of the train split \(data\.messages_column='messages'\): message 1 has role 'bot'",
    ),
    "missing content": (
        [{"role": "user"}, {"role": "assistant", "content": "hello"}],
        r"row 1 of the train split .*: message 0 \(role 'user'\) has no text content",
    ),
    "no assistant turn": (
        [{"role": "user", "content": "hi"}],
        r"row 1 of the train split .* has no assistant turn",
    ),
}


@pytest.mark.parametrize("case", BAD_CONVERSATIONS)
def test_bad_conversations_fail_before_tokenizing(
    case: str, tmp_path: Path, models: dict[str, str], encoder_calls: list[str]
) -> None:
    bad, message = BAD_CONVERSATIONS[case]
    train = fixtures.write_jsonl(tmp_path / "chat.jsonl", [{"messages": CONVERSATION}, {"messages": bad}])
    params = _params(models["chat"], train_file=train, test_file=train, format="chat")
    with pytest.raises(ValueError, match=message):
        data.tokenize(params, str(tmp_path / "cache"))
    assert encoder_calls == [] and not any((tmp_path / "cache").iterdir())


def test_a_template_that_fails_to_render_names_the_row(tmp_path: Path, models: dict[str, str]) -> None:
    strict = "{% for m in messages %}{% if m['content'] == 'boom' %}{{ raise_exception('no boom') }}"
    strict += "{% endif %}{{ m['content'] }}<|im_end|>{% endfor %}"
    rows = [CONVERSATION, [{"role": "user", "content": "boom"}, {"role": "assistant", "content": "x"}]]
    train = _chat_file(tmp_path, rows)
    params = _params(models["chat"], train_file=train, test_file=train, format="chat", chat_template=strict)
    with pytest.raises(ValueError, match=r"row 1 of the train split: TemplateError: no boom"):
        data.tokenize(params, str(tmp_path / "cache"))
    assert not any((tmp_path / "cache").iterdir())


# -- instruction, completion, text -------------------------------------------------------------------
def test_jinja_instruction_template_with_an_optional_input(tmp_path: Path, models: dict[str, str]) -> None:
    rows = [
        {"instruction": "Name a colour.", "input": "", "output": "Blue."},
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    ]
    train = fixtures.write_jsonl(tmp_path / "alpaca.jsonl", rows)
    params = _params(
        models["causal_lm"], train_file=train, test_file=train, format="instruction", prompt_template=ALPACA,
        target_column="output",
    )  # fmt: skip
    splits = load_from_disk(data.tokenize(params, str(tmp_path / "cache")).path)
    assert splits["test"]["prompt"] == [
        "### Instruction:\nName a colour.\n\n### Response:\n",
        "### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n",
    ]
    tok = load_tokenizer(params)
    for raw, row, prompt in zip(rows, splits["train"], splits["test"]["prompt"]):
        target = [*tok(raw["output"], add_special_tokens=False)["input_ids"], tok.eos_token_id]
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        assert row["input_ids"] == prompt_ids + target
        assert row["labels"] == [-100] * len(prompt_ids) + target


def test_template_naming_a_missing_column_fails_before_tokenizing(
    tmp_path: Path, models: dict[str, str], encoder_calls: list[str]
) -> None:
    train = fixtures.write_jsonl(tmp_path / "a.jsonl", [{"instruction": "x", "output": "y"}] * 2)
    params = _params(
        models["causal_lm"], train_file=train, test_file=train, prompt_template=ALPACA, target_column="output"
    )
    with pytest.raises(
        ValueError, match=r"\{input\} in data\.prompt_template is not a column of the train split"
    ):
        data.tokenize(params, str(tmp_path / "cache"))
    assert encoder_calls == []
    broken = _params(
        models["causal_lm"],
        train_file=train,
        test_file=train,
        prompt_template="{% if x %}",
        target_column="output",
    )
    with pytest.raises(ValueError, match=r"data\.prompt_template is not a valid Jinja template"):
        data.tokenize(broken, str(tmp_path / "cache"))


def test_completion_and_text_formats(tmp_path: Path, models: dict[str, str]) -> None:
    rows = [{"prompt": "2+2=", "completion": "4"}, {"prompt": "3+3=", "completion": "6"}]
    train = fixtures.write_jsonl(tmp_path / "c.jsonl", rows)
    params = _params(models["causal_lm"], train_file=train, test_file=train, format="completion")
    splits = load_from_disk(data.tokenize(params, str(tmp_path / "c1")).path)
    tok = load_tokenizer(params)
    assert [tok.decode(_spans(r["labels"])[0]) for r in splits["train"]] == [
        "4<|endoftext|>",
        "6<|endoftext|>",
    ]
    assert splits["test"]["reference"] == ["4", "6"]

    text = fixtures.write_jsonl(tmp_path / "t.jsonl", [{"text": "plain text to model"}] * 2)
    source = {"train_file": text, "test_file": text, "format": "text"}
    with pytest.raises(pydantic.ValidationError, match=r"scored by eval\.metrics=\[perplexity\]"):
        _params(models["causal_lm"], **source)
    params = FinetuneParams(
        model={"name_or_path": models["causal_lm"], "task": "causal_lm"},
        data=source,
        eval={"metrics": ["perplexity"]},
    )
    row = load_from_disk(data.tokenize(params, str(tmp_path / "c2")).path)["train"][0]
    assert row["labels"] == row["input_ids"]  # every token is learned
    assert tok.decode(row["input_ids"]) == "plain text to model<|endoftext|>"


def test_class_label_targets_are_rendered_as_their_names(tmp_path: Path, models: dict[str, str]) -> None:
    features = Features(
        {"sentence": Value("string"), "label": ClassLabel(names=["negative", "neutral", "positive"])}
    )
    split = Dataset.from_dict(
        {"sentence": ["profits rose", "sales fell"], "label": [2, 0]}, features=features
    )
    DatasetDict({"train": split, "test": split}).save_to_disk(tmp_path / "phrasebank")
    params = _params(
        models["seq2seq_lm"], "seq2seq_lm", dataset=str(tmp_path / "phrasebank"), text_column="sentence",
        target_column="label",
    )  # fmt: skip
    splits = load_from_disk(data.tokenize(params, str(tmp_path / "cache")).path)
    tok = load_tokenizer(params)
    assert splits["test"]["reference"] == ["positive", "negative"]
    assert tok.decode(splits["train"][0]["labels"], skip_special_tokens=True) == "positive"


# -- truncation ---------------------------------------------------------------------------------------
def test_truncation_policies_are_applied_and_counted(tmp_path: Path, models: dict[str, str]) -> None:
    rows = [
        {"text": "a long prompt " * 4, "target": "yes"},  # 56 + 4 tokens with eos
        {"text": "short", "target": "no"},
        {"text": "x", "target": "a long answer " * 4},  # the completion alone is too long
    ]
    train = fixtures.write_jsonl(tmp_path / "r.jsonl", rows)
    tok = fixtures.bytelevel_tokenizer()
    got = {}
    for policy in ("left", "right", "drop"):
        params = _params(
            models["causal_lm"], train_file=train, test_file=train, target_column="target", max_length=24,
            truncation=policy,
        )  # fmt: skip
        result = data.tokenize(params, str(tmp_path / policy))
        got[policy] = (result, load_from_disk(result.path)["train"])
    left, ds = got["left"]
    assert left.truncation["train"] == {"truncated": 2, "dropped": 0}
    assert (left.truncated_rows, left.dropped_rows) == (4, 0)  # train and test both hold the 3 rows
    # Left keeps the end: the whole answer of row 0 and the end of its prompt.
    assert len(ds[0]["input_ids"]) == 24 and tok.decode(_spans(ds[0]["labels"])[0]) == "yes<|endoftext|>"
    assert tok.decode(ds[2]["input_ids"]).endswith("long answer <|endoftext|>")
    right, ds = got["right"]
    # Right keeps the start: row 0 loses its answer entirely, so it has nothing to learn and is dropped.
    assert right.truncation["train"] == {"truncated": 1, "dropped": 1}
    assert len(ds) == 2 and tok.decode(ds[1]["input_ids"]).startswith("xa long answer")
    drop, ds = got["drop"]
    assert drop.truncation["train"] == {"truncated": 0, "dropped": 2} and len(ds) == 1


def test_seq2seq_truncation_counts_long_targets(tmp_path: Path, models: dict[str, str]) -> None:
    rows = [
        {"text": "the movie was great", "target": "positive and very good"},
        {"text": "bad", "target": "no"},
    ]
    train = fixtures.write_jsonl(tmp_path / "s.jsonl", rows)
    params = _params(
        models["seq2seq_lm"], "seq2seq_lm", train_file=train, test_file=train, target_column="target",
        max_target_length=3,
    )  # fmt: skip
    result = data.tokenize(params, str(tmp_path / "cache"))
    assert result.truncation["train"] == {"truncated": 1, "dropped": 0}
    assert max(len(r) for r in load_from_disk(result.path)["train"]["labels"]) == 3


# -- splits ---------------------------------------------------------------------------------------
def test_validation_fraction_is_carved_stably_and_apart_from_test(tmp_path: Path) -> None:
    rows = [{"text": f"review number {i}", "label": ["a", "b"][i % 2]} for i in range(20)]
    train = fixtures.write_jsonl(tmp_path / "twenty.jsonl", rows)
    params = FinetuneParams(data={"train_file": train, "test_fraction": 0.2, "validation_fraction": 0.25})
    first = data.tokenize(params, str(tmp_path / "c1"))
    second = data.tokenize(params, str(tmp_path / "c2"))
    assert (first.num_train, first.num_validation, first.num_test) == (12, 4, 4)
    texts = {name: load_from_disk(first.path)[name]["text"] for name in ("validation", "test")}
    assert texts["validation"] == load_from_disk(second.path)["validation"]["text"]
    train_ids = load_from_disk(first.path)["train"]["input_ids"]
    assert not set(texts["validation"]) & set(texts["test"])
    assert len(train_ids) + 8 == len(rows)


def test_validation_split_by_name_and_its_errors(tmp_path: Path, encoder_calls: list[str]) -> None:
    split = Dataset.from_list([{"text": f"t{i}", "label": "a" if i % 2 else "b"} for i in range(6)])
    DatasetDict({"train": split, "validation": split.select(range(2)), "test": split}).save_to_disk(
        tmp_path / "d"
    )
    named = data.tokenize(FinetuneParams(data={"dataset": str(tmp_path / "d")}), str(tmp_path / "c"))
    assert named.num_validation == 2
    both = FinetuneParams(data={"dataset": str(tmp_path / "d"), "validation_fraction": 0.5})
    with pytest.raises(ValueError, match=r"has a split named data\.validation_split='validation' and"):
        data.tokenize(both, str(tmp_path / "c"))
    small = fixtures.write_jsonl(
        tmp_path / "two.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]
    )
    empty = FinetuneParams(data={"train_file": small, "test_file": small, "validation_fraction": 0.9})
    encoder_calls.clear()
    with pytest.raises(
        ValueError, match=r"data\.validation_fraction=0\.9 of 2 train rows leaves no train rows"
    ):
        data.tokenize(empty, str(tmp_path / "c"))
    assert encoder_calls == []


def test_parameter_errors_caught_before_any_step(tmp_path: Path) -> None:
    base = {"train_file": "t.jsonl", "test_fraction": 0.5}
    cases = [
        ({"model": {"task": "seq_cls"}, "data": {**base, "packing": True}}, "data.packing packs causal LM"),
        (
            {"model": {"task": "seq_cls"}, "data": {**base, "format": "chat"}},
            "data.format='chat' does not fit",
        ),
        ({"model": {"task": "seq2seq_lm"}, "data": {**base, "format": "chat"}}, "does not fit model.task"),
        (
            {"data": base, "train": {"load_best_model_at_end": True}},
            "select on the validation split, and this run has none",
        ),
        (
            {"data": base, "train": {"metric_for_best_model": "eval_loss"}},
            "selection uses the validation split",
        ),
        ({"data": {**base, "validation_fraction": 0.1, "validation_file": "v.jsonl"}}, "not both"),
    ]
    for config, message in cases:
        with pytest.raises(pydantic.ValidationError, match=message):
            FinetuneParams.model_validate(config)
