"""How one raw row becomes model input: templates, chat templates, loss masks, truncation.

Training (the tokenize step), evaluation (generation prompts) and anything serving the adapter later
use this module, so a served model sees its inputs exactly as training did.

A causal-LM example is a list of text `Segment`s, each trained on or not, tokenized one by one and
joined:

    instruction / completion   [prefix] prompt | completion eos        (prompt: template or column)
    text                       [prefix] text eos                       (every token trained)
    chat                       render(turns) cut at each assistant turn:
                               system+user ... | assistant 1 | user 2 ... | assistant 2 |

`[prefix]` is what the tokenizer puts before text (Llama's bos; nothing for GPT-2); a chat template
writes its own. Each cut of a conversation sits where `render(turns before it, add_generation_prompt)`
ends, and prompts and targets are tokenized apart, so every trained boundary is the one generation
sees. `data.train_on` picks the trained segments: `assistant` (every assistant turn, or the
completion), `last_assistant`, or `all`.

Rows over `data.max_length` follow `data.truncation`: `left` drops tokens from the start (after the
prefix) and so keeps the completion, `right` drops the end, `drop` drops the row; a row left with
no trained token is dropped too. `Fitted.status` says which happened, for the counts the run logs.

Templates are Jinja when they contain `{{`, `{%` or `{#` (the engine of chat templates, so optional
fields work: `{% if input %}...{% endif %}`), else `str.format` with `{column}` placeholders.
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flows.params import DataFormat, FinetuneParams

ROLES = ("system", "user", "assistant", "tool")
_JINJA_MARKS = ("{{", "{%", "{#")


@dataclass(frozen=True)
class Segment:
    text: str
    trained: bool


@dataclass(frozen=True)
class Fitted:
    """A tokenized example after the truncation policy; ids is empty when the row is dropped."""

    ids: list[int]
    labels: list[int]
    status: str  # "kept", "truncated" or "dropped"


# -- templates -------------------------------------------------------------------------------------
def is_jinja(template: str) -> bool:
    return any(mark in template for mark in _JINJA_MARKS)


def _jinja_env() -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # As transformers renders chat templates (trim/lstrip blocks), keeping a template's final newline.
    return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def template_fields(template: str, what: str = "data.prompt_template") -> list[str]:
    """The column names a prompt template reads (Jinja or str.format); ValueError if it cannot parse."""
    if is_jinja(template):
        import jinja2
        import jinja2.meta

        try:
            ast = _jinja_env().parse(template)
        except jinja2.TemplateSyntaxError as err:
            raise ValueError(
                f"{what} is not a valid Jinja template: line {err.lineno}: {err.message}"
            ) from None
        return sorted(jinja2.meta.find_undeclared_variables(ast))
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise ValueError(f"{what}={template!r} is not a valid format string: {err}") from None
    if any(not f or f.isdigit() for f in fields):
        raise ValueError(f"{what}={template!r}: placeholders must name columns, e.g. {{text}}")
    return list(dict.fromkeys(f.split(".")[0].split("[")[0] for f in fields))


def compile_template(template: str) -> Callable[[dict[str, Any]], str]:
    """A function rendering `template` with a row's columns."""
    if is_jinja(template):
        compiled = _jinja_env().from_string(template)
        return lambda row: compiled.render(**row)
    return lambda row: template.format(**row)


def read_chat_template(value: str | None) -> str | None:
    """data.chat_template as template text: a file's content when it names a file, else the value."""
    if value is None:
        return None
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as fh:
            return fh.read()
    if not is_jinja(value):
        raise ValueError(
            f"data.chat_template={value[:80]!r} is neither an existing file nor a Jinja template "
            f"(working directory: {os.getcwd()})"
        )
    return value


# -- rows to segments ------------------------------------------------------------------------------
class RowFormat:
    """The formatting of one run: built once from the parameters and the tokenizer, applied per row."""

    def __init__(self, params: FinetuneParams, tokenizer: Any) -> None:
        d = params.data
        self.task = params.model.task
        self.format: DataFormat = d.resolved_format(self.task)
        self.train_on = d.train_on
        self.max_length = d.max_length
        self.truncation = d.truncation or ("right" if self.format == "text" else "left")
        self.tokenizer = tokenizer
        self._d = d
        self.chat_template = read_chat_template(d.chat_template)
        if (
            self.format == "chat"
            and self.chat_template is None
            and not getattr(tokenizer, "chat_template", None)
        ):
            raise ValueError(
                f"data.format='chat' needs a chat template, and the tokenizer of {tokenizer.name_or_path!r} "
                "has none: set data.chat_template to a Jinja template (inline or a file path), e.g. the one "
                "of the model's Instruct version"
            )
        self._prompt = self._prompt_renderer()
        self.prefix: list[int] = special_prefix(tokenizer) if self.format != "chat" else []

    def _prompt_renderer(self) -> Callable[[dict[str, Any]], str]:
        d = self._d
        if self.format == "completion":
            return lambda row: str(row[d.prompt_column])
        if self.format == "instruction" and d.prompt_template is not None:
            return compile_template(d.prompt_template)
        return lambda row: str(row[d.text_column])

    def target(self, row: dict[str, Any]) -> str:
        column = self._d.completion_column if self.format == "completion" else self._d.target_column
        return str(row[column or ""])

    # chat ------------------------------------------------------------------------------------------
    def render(self, messages: list[dict[str, Any]], generation_prompt: bool = False) -> str:
        text = self.tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=generation_prompt,
            chat_template=self.chat_template,
        )
        return str(text)

    def _chat_segments(self, messages: list[dict[str, Any]]) -> list[Segment]:
        turns = [m for m in messages if m is not None]
        assistant = [i for i, m in enumerate(turns) if m.get("role") == "assistant"]
        if self.train_on != "all":
            turns = turns[: assistant[-1] + 1]  # nothing after the last answer is learned
        full = self.render(turns)
        if self.train_on == "all":
            return [Segment(full, True)]
        trained = assistant if self.train_on == "assistant" else assistant[-1:]
        segments: list[Segment] = []
        cursor = 0
        for i in trained:
            before = self.render(turns[:i], generation_prompt=True)
            after = self.render(turns[: i + 1])
            if not (full.startswith(before) and full.startswith(after) and len(before) <= len(after)):
                raise ValueError(
                    "the chat template does not render the start of a conversation as the start of the "
                    "whole conversation, so assistant turns cannot be located; use a data.chat_template "
                    "that renders earlier turns the same way whatever follows them"
                )
            start, end = len(before), len(after)
            content = str(turns[i].get("content") or "")
            if before == self.render(turns[:i]) and content and content in full[start:end]:
                # No generation prompt in this template: the turn's header is not the model's to write.
                start += full[start:end].index(content)
            end = start + len(full[start:end].rstrip())  # formatting after the end-of-turn marker
            segments += [Segment(full[cursor:start], False), Segment(full[start:end], True)]
            cursor = end
        return [s for s in segments if s.text]

    # segments and prompts ------------------------------------------------------------------------------
    def segments(self, row: dict[str, Any]) -> list[Segment]:
        """The text of a causal-LM training example, cut into trained and untrained pieces."""
        if self.format == "chat":
            return self._chat_segments(row[self._d.messages_column])
        if self.format == "text":
            return [Segment(str(row[self._d.text_column]), True)]
        prompt, target = self._prompt(row), self.target(row)
        return [Segment(prompt, self.train_on == "all"), Segment(target, True)]

    def input_columns(self) -> list[str]:
        """The columns a row needs at inference (no target)."""
        d = self._d
        if self.format == "chat":
            return [d.messages_column]
        if self.format == "completion":
            return [d.prompt_column]
        if self.format == "instruction" and d.prompt_template is not None:
            return template_fields(d.prompt_template)
        return [d.text_column]

    def inference_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """What a user sends to predict this row: its input columns (chat: the turns before the last
        answer, which is the reference)."""
        if self.format == "chat":
            turns = [m for m in row[self._d.messages_column] if m is not None]
            last = max(i for i, m in enumerate(turns) if m.get("role") == "assistant")
            return {self._d.messages_column: turns[:last]}
        return {column: row[column] for column in self.input_columns()}

    def inference_prompt(self, row: dict[str, Any]) -> str:
        """The prompt for a new row at inference (no reference needed): chat renders the whole
        conversation so far and opens the assistant's turn."""
        if self.format == "chat":
            turns = [m for m in row[self._d.messages_column] if m is not None]
            if not turns or turns[-1].get("role") == "assistant":
                raise ValueError(
                    f"{self._d.messages_column!r} must end with a turn the model answers (the last "
                    "message is from the assistant, or there is none)"
                )
            return self.render(turns, generation_prompt=True)
        if self.format == "text":
            return str(row[self._d.text_column])
        return self._prompt(row)

    def prompt_and_reference(self, row: dict[str, Any]) -> tuple[str, str]:
        """What generation starts from, and the text it should produce (plain text: the text, and
        nothing: it is scored by perplexity, not by generation)."""
        if self.format == "text":
            return str(row[self._d.text_column]), ""
        if self.format == "chat":
            turns = [m for m in row[self._d.messages_column] if m is not None]
            last = max(i for i, m in enumerate(turns) if m.get("role") == "assistant")
            return self.render(turns[:last], generation_prompt=True), str(turns[last].get("content") or "")
        return self._prompt(row), self.target(row)

    # ids ----------------------------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, row: dict[str, Any]) -> Fitted:
        """Token ids and labels (-100 where the loss does not count) of a causal-LM row, fitted."""
        ids, trained = list(self.prefix), [False] * len(self.prefix)
        segments = self.segments(row)
        for segment in segments:
            piece = self._ids(segment.text)
            ids += piece
            trained += [segment.trained] * len(piece)
        if self.format != "chat":  # chat templates end turns themselves
            if self.tokenizer.eos_token_id is None:
                raise ValueError(
                    f"the tokenizer of {self.tokenizer.name_or_path!r} has no eos token to end targets with"
                )
            ids.append(self.tokenizer.eos_token_id)
            trained.append(segments[-1].trained)
        return fit(ids, trained, self.max_length, self.truncation, keep=len(self.prefix) or _bos(self, ids))

    def prompt_ids(self, prompt: str) -> list[int]:
        """Generation input for a prompt rendered by `prompt_and_reference`: prefix + prompt, keeping
        the prompt's end when it is longer than max_length."""
        ids = self._ids(prompt)
        head = list(self.prefix) if self.prefix else ids[: _bos(self, ids)]
        body = ids if self.prefix else ids[len(head) :]
        budget = max(self.max_length - len(head), 1)
        return [*head, *body[-budget:]]


def _bos(fmt: RowFormat, ids: list[int]) -> int:
    """1 when a chat template's text starts with the bos token (kept by left truncation), else 0."""
    bos = fmt.tokenizer.bos_token_id
    return 1 if fmt.format == "chat" and bos is not None and ids[:1] == [bos] else 0


def fit(ids: list[int], trained: list[bool], max_length: int, policy: str, keep: int = 0) -> Fitted:
    """Apply the truncation policy to one example; the first `keep` tokens survive left truncation."""
    status = "kept"
    if len(ids) > max_length:
        if policy == "drop":
            return Fitted([], [], "dropped")
        status = "truncated"
        if policy == "left":
            cut = len(ids) - max_length
            ids, trained = ids[:keep] + ids[keep + cut :], trained[:keep] + trained[keep + cut :]
        else:
            ids, trained = ids[:max_length], trained[:max_length]
    if not any(trained):
        return Fitted([], [], "dropped")  # nothing left to learn from
    labels = [token if on else -100 for token, on in zip(ids, trained)]
    return Fitted(ids, labels, status)


def special_prefix(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer puts before text (e.g. Llama's bos; none for GPT-2)."""
    probe = tokenizer("hello")["input_ids"]
    bare = tokenizer("hello", add_special_tokens=False)["input_ids"]
    for start in range(len(probe) - len(bare) + 1):
        if probe[start : start + len(bare)] == bare:
            return list(probe[:start])
    return []
