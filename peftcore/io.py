"""File IO shared by configs and weights: atomic writes, local-or-Hub file resolution, safetensors."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


def _atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Write through a temp file in the same directory, then rename over `path`.

    A crash or error mid-write leaves any previous file at `path` untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    _atomic_write(path, write)


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str) -> None:
    """Save tensors as safetensors with metadata `{"format": "pt"}`, atomically.

    Tensors are made contiguous and detached; tensors sharing storage are cloned (safetensors refuses
    shared storage, and an adapter file must be self-contained).
    """
    seen: set[tuple[int, int]] = set()
    clean: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        t = tensor.detach()
        if t.device.type == "meta":
            raise ValueError(f"cannot save tensor {key!r}: it is on the meta device (no data)")
        ident = (t.untyped_storage().data_ptr(), t.storage_offset())
        if ident in seen or not t.is_contiguous():
            t = t.clone(memory_format=torch.contiguous_format)
        seen.add((t.untyped_storage().data_ptr(), t.storage_offset()))
        clean[key] = t.cpu() if t.device.type != "cpu" else t
    _atomic_write(path, lambda tmp: save_file(clean, tmp, metadata={"format": "pt"}))


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


def resolve_file(
    path_or_repo: str | os.PathLike[str],
    filename: str,
    subfolder: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    required: bool = True,
) -> str:
    """Return a local path to `filename` from a directory or a Hugging Face Hub repo id.

    Returns "" when the file does not exist and `required` is false.
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
        return hf_hub_download(base, filename, subfolder=subfolder, revision=revision, token=token)
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
