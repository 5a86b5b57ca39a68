"""Checks on the loaded splits before anything is tokenized: each failure is a ValueError naming the
parameter, the split, the row and what would fix it."""

from __future__ import annotations

from typing import Any

from flows.params import MEDIA_TASKS, DataParams, FinetuneParams
from flows.steps.data.format import ROLES, template_fields


def needed_columns(params: FinetuneParams) -> list[tuple[str, str]]:
    """(how an error names it, column) for every column the run reads."""
    d, task = params.data, params.model.task
    fmt = d.resolved_format(task)
    if task in MEDIA_TASKS:
        from flows.steps.data.media import media_columns

        return media_columns(params)
    if task == "seq_cls":
        return [(f"data.text_column={d.text_column!r}", d.text_column), _label(d)]
    if task == "token_cls":
        return [(f"data.tokens_column={d.tokens_column!r}", d.tokens_column), _label(d)]
    if fmt == "chat":
        return [(f"data.messages_column={d.messages_column!r}", d.messages_column)]
    if fmt == "completion":
        return [
            (f"data.prompt_column={d.prompt_column!r}", d.prompt_column),
            (f"data.completion_column={d.completion_column!r}", d.completion_column),
        ]
    if fmt == "text" or d.prompt_template is None:
        needed = [(f"data.text_column={d.text_column!r}", d.text_column)]
    else:
        needed = [(f"{{{f}}} in data.prompt_template", f) for f in template_fields(d.prompt_template)]
    if fmt == "instruction":
        needed.append((f"data.target_column={d.target_column!r}", d.target_column or ""))
    return needed


def _label(d: DataParams) -> tuple[str, str]:
    return (f"data.label_column={d.label_column!r}", d.label_column)


def validate(splits: dict[str, Any], params: FinetuneParams) -> list[str] | None:
    """Check columns, emptiness, conversations and labels; returns the label names (classification)."""
    d, task = params.data, params.model.task
    needed = needed_columns(params)
    # Columns a template reads may be empty (optional fields); the others must hold a value.
    optional = {c for what, c in needed if what.endswith("data.prompt_template")}
    for name, split in splits.items():
        if len(split) == 0:
            raise ValueError(f"the {name} split is empty (data.{name}_split={getattr(d, name + '_split')!r})")
        for what, column in needed:
            if column not in split.column_names:
                raise ValueError(
                    f"{what} is not a column of the {name} split (columns: {split.column_names})"
                )
            nulls = split.with_format("arrow")[column].null_count
            if nulls and column not in optional:
                raise ValueError(f"{what}: {nulls} row(s) of the {name} split have no value")
    if d.resolved_format(task) == "chat":
        for name, split in splits.items():
            check_conversations(split[d.messages_column], name, d.messages_column)
    if task == "token_cls":
        _check_word_tags(splits, d)
    if task in ("seq_cls", "token_cls"):
        return _label_names(splits, d)
    return None


def check_conversations(conversations: list[Any], split: str, column: str) -> None:
    """Every row is a list of {role, content} messages with known roles and at least one answer."""
    for row, messages in enumerate(conversations):
        where = f"row {row} of the {split} split (data.messages_column={column!r})"
        if not isinstance(messages, list) or not messages:
            raise ValueError(
                f"{where}: expected a non-empty list of {{role, content}} messages, got {messages!r}"[:300]
            )
        for turn, message in enumerate(messages):
            if not isinstance(message, dict):
                raise ValueError(
                    f"{where}: message {turn} is {type(message).__name__}, not a {{role, content}} dict"
                )
            role = message.get("role")
            if role not in ROLES:
                raise ValueError(f"{where}: message {turn} has role {role!r}; roles are {', '.join(ROLES)}")
            if not isinstance(message.get("content"), str):
                raise ValueError(f"{where}: message {turn} (role {role!r}) has no text content")
        roles = [m["role"] for m in messages]
        if "assistant" not in roles:
            raise ValueError(f"{where} has no assistant turn: nothing to learn or to score")
        if roles[0] == "assistant":
            raise ValueError(f"{where} starts with an assistant turn: there is no prompt it answers")


def _check_word_tags(splits: dict[str, Any], d: DataParams) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    for name, split in splits.items():
        tokens = split.with_format("arrow")[d.tokens_column]
        tags = split.with_format("arrow")[d.label_column]
        for field, column, values in (
            ("tokens_column", d.tokens_column, tokens),
            ("label_column", d.label_column, tags),
        ):
            if not (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)):
                raise ValueError(
                    f"data.{field}={column!r} must hold a list per row for token classification, got {values.type}"
                )
        mismatch = pc.not_equal(pc.list_value_length(tokens), pc.list_value_length(tags)).to_pylist()
        if True in mismatch:
            row = mismatch.index(True)
            raise ValueError(
                f"row {row} of the {name} split has {len(tokens[row])} words (data.tokens_column={d.tokens_column!r}) "
                f"but {len(tags[row])} tags (data.label_column={d.label_column!r})"
            )


def _label_names(splits: dict[str, Any], d: DataParams) -> list[str]:
    """The class names in id order; every label of every split must be one of them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    feature = splits["train"].features[d.label_column]
    feature = getattr(feature, "feature", feature)  # token_cls: the tag inside the list
    found: dict[str, set[Any]] = {}
    for name, split in splits.items():
        values = split.with_format("arrow")[d.label_column]
        if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            values = pc.list_flatten(values)
        if values.null_count:
            raise ValueError(
                f"data.label_column={d.label_column!r}: the {name} split has {values.null_count} null tag(s)"
            )
        found[name] = set(pc.unique(values).to_pylist())
    every = set().union(*found.values())
    if not every:
        raise ValueError(f"data.label_column={d.label_column!r} holds no labels")
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in every)
    if not ints and not all(isinstance(v, str) for v in every):
        kinds = sorted({type(v).__name__ for v in every})
        raise ValueError(f"data.label_column={d.label_column!r} must hold class names or ids, got {kinds}")
    names = d.label_names or getattr(feature, "names", None)
    if names is None:
        names = [str(i) for i in range(max(every) + 1)] if ints else sorted(every)
    allowed: set[Any] = set(range(len(names))) if ints else set(names)
    for name, labels in found.items():
        unknown = sorted(labels - allowed)
        if unknown:
            what = f"ids outside 0..{len(names) - 1}" if ints else "labels not in label_names"
            raise ValueError(
                f"the {name} split of data.label_column={d.label_column!r} has {what}: {unknown[:10]} "
                f"(label_names: {names})"
            )
    return list(names)
