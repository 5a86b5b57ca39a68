"""File IO shared by configs and weights: atomic writes, local-or-Hub file resolution, safetensors."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


def atomic_write_files(writers: dict[str, Callable[[str], None]]) -> None:
    """Write several files as one unit: each to a flushed temp file beside it, then rename them all.

    `writers` maps each final path to a function writing that file's content to a given temp path.
    Renames start only once every file is fully written, so a failure while writing (disk full, a
    serialisation error) leaves every previous file untouched and no temp file behind; an adapter's
    weights and config can never end up from two different saves.
    """
    staged: list[tuple[str, str]] = []
    try:
        for path, write in writers.items():
            directory = os.path.dirname(os.path.abspath(path))
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
            os.close(fd)
            staged.append((tmp, path))
            write(tmp)
            with open(tmp, "rb") as fh:  # on disk before the rename, so a crash cannot leave an empty file
                os.fsync(fh.fileno())
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise


def text_writer(text: str) -> Callable[[str], None]:
    """A writer for `atomic_write_files` that writes `text` as UTF-8."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return write


def safetensors_writer(tensors: dict[str, torch.Tensor]) -> Callable[[str], None]:
    """A writer for `atomic_write_files` saving `tensors` as safetensors with metadata `{"format": "pt"}`.

    Tensors are made contiguous and detached; tensors sharing storage are cloned (safetensors refuses
    shared storage, and an adapter file must be self-contained).
    """
    seen: set[tuple[int, int]] = set()
    clean: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        t = tensor.detach()
        if t.device.type == "meta":
            raise ValueError(f"cannot save tensor {key!r}: it is on the meta device (no data)")
        ident = (t.untyped_storage().data_ptr(), int(t.storage_offset()))
        if ident in seen or not t.is_contiguous():
            t = t.clone(memory_format=torch.contiguous_format)
        seen.add((t.untyped_storage().data_ptr(), int(t.storage_offset())))
        clean[key] = t.cpu() if t.device.type != "cpu" else t
    # `save_file` is looked up at call time so tests can simulate a failing disk.
    return lambda tmp: save_file(clean, tmp, metadata={"format": "pt"})


def atomic_write_text(path: str, text: str) -> None:
    """Write `text` to `path` through a temp file; a failure leaves any previous file untouched."""
    atomic_write_files({path: text_writer(text)})


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str) -> None:
    """Save tensors to `path` as safetensors through a temp file (see `safetensors_writer`)."""
    atomic_write_files({path: safetensors_writer(tensors)})


def load_safetensors(path: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file with a clear error when it is corrupt or truncated."""
    try:
        return load_file(path, device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        size = os.path.getsize(path) if os.path.exists(path) else 0
        raise ValueError(
            f"{path} is not a readable safetensors file ({size} bytes): {exc}. "
            "It may be truncated or corrupt; re-save or re-download the adapter"
        ) from None


def download_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The entries of `kwargs` that `huggingface_hub.hf_hub_download` takes (besides repo, file,
    subfolder, revision and token), popped from `kwargs`."""
    import inspect

    from huggingface_hub import hf_hub_download

    own = {"repo_id", "filename", "subfolder", "revision", "token"}
    known = set(inspect.signature(hf_hub_download).parameters) - own
    return {key: kwargs.pop(key) for key in list(kwargs) if key in known}


def resolve_file(
    path_or_repo: str | os.PathLike[str],
    filename: str,
    subfolder: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    required: bool = True,
    **download: Any,
) -> str:
    """Return a local path to `filename` from a directory or a Hugging Face Hub repo id.

    Returns "" when the file does not exist and `required` is false. `download`: more arguments of
    `huggingface_hub.hf_hub_download` (cache_dir, force_download, local_files_only, ...).
    """
    base = os.fspath(path_or_repo)
    local_dir = os.path.join(base, subfolder) if subfolder else base
    if os.path.isdir(local_dir):
        candidate = os.path.join(local_dir, filename)
        if os.path.isfile(candidate):
            return candidate
        if not required:
            return ""
        raise FileNotFoundError(f"{candidate} does not exist; is {local_dir!r} an adapter directory?")
    if os.path.isdir(base) or base.startswith((".", "/", "~")) or base.count("/") > 1:
        if not required:
            return ""
        raise FileNotFoundError(f"{local_dir!r} is neither an existing directory nor a Hub repo id")
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    try:
        return hf_hub_download(
            base, filename, subfolder=subfolder, revision=revision, token=token, **download
        )
    except RemoteEntryNotFoundError:
        # The Hub answered: this revision has no such file.
        if not required:
            return ""
        raise FileNotFoundError(f"{filename} not found in Hub repo {base!r}") from None
    except LocalEntryNotFoundError:
        # Not cached, and the Hub was not asked (offline mode) or did not answer (network, 5xx).
        # Offline, "not in the cache" is the only answer for an optional file; online, treating it as
        # absent would report an outage as a missing file, so the client's own error stands.
        if not required and constants.is_offline_mode():
            return ""
        raise
