"""Model cards and Hub uploads for adapters (through `huggingface_hub`)."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from peftcore.constants import MODEL_CARD_NAME
from peftcore.io import atomic_write_text

_DEFAULT_BODY = """
# Adapter for {base}

A parameter-efficient adapter for `{base}`, saved in the Hugging Face PEFT format: the adapter's
configuration in `adapter_config.json` and its weights in `adapter_model.safetensors`. Only the
adapter is stored here; the base model's own weights are loaded from its repository.

## How to use

With peftcore or with Hugging Face `peft` (the files are the same):

```python
from peftcore import AutoPeftModel  # or: from peft import AutoPeftModel

model = AutoPeftModel.from_pretrained("<this repo or directory>")
```

To attach it to a base model you loaded yourself:

```python
from peftcore import PeftModel

model = PeftModel.from_pretrained(base_model, "<this repo or directory>")
model = model.merge_and_unload()  # optional: fold the adapter into the base weights
```

## Model details

- Base model: `{base}`
- Method and settings: see `adapter_config.json` (`peft_type`, rank, targeted modules)
- Library: written by peftcore {version}

## Training details

Describe the data, the hyperparameters and the evaluation results of this adapter here, so others can
judge what it is good for and reproduce it.

## Limitations

An adapter inherits the biases and limits of its base model and of its training data; evaluate it on
your own task before relying on it.
"""


def write_model_card(
    directory: str,
    base_model: str | None,
    tags: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Create or update `README.md` with YAML front matter (`base_model`, `library_name: peft`, tags).

    An existing card keeps its body; its metadata is merged (tags are unioned).
    """
    from huggingface_hub import ModelCard, ModelCardData

    path = os.path.join(directory, MODEL_CARD_NAME)
    if os.path.isfile(path):
        card = ModelCard.load(path)
    else:
        from peftcore._version import __version__

        body = _DEFAULT_BODY.format(base=base_model or "a custom model", version=__version__)
        card = ModelCard(f"---\n{ModelCardData(library_name='peft').to_yaml()}\n---\n{body}")
    data: ModelCardData = card.data
    data.library_name = "peft"
    if base_model and not os.path.isabs(base_model) and not base_model.startswith("."):
        data.base_model = base_model
    merged_tags = list(data.tags or [])
    for tag in ["peft", "peftcore", *(tags or [])]:
        if tag not in merged_tags:
            merged_tags.append(tag)
    data.tags = merged_tags
    for key, value in (extra or {}).items():
        setattr(data, key, value)
    atomic_write_text(path, str(card))


def push_folder_to_hub(
    save: Any,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload adapter",
    revision: str | None = None,
    create_pr: bool = False,
    endpoint: str | None = None,
) -> Any:
    """Create the repo if needed, call `save(tmpdir)`, and upload the folder in one commit.

    Returns the `CommitInfo` (its `oid` is the commit id). The token defaults to `HF_TOKEN`.
    """
    from huggingface_hub import HfApi

    if not repo_id or repo_id.count("/") > 1:
        raise ValueError(f"repo_id={repo_id!r} must look like 'user/name' or 'name'")
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory() as tmp:
        save(tmp)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
            repo_type="model",
        )
