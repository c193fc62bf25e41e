"""Resolve checkpoint names to local files: plain paths, or ``hf-hub:<owner>/<repo>/<file>`` on the Hugging Face
hub (downloaded once into the standard HF cache, then used offline).

No model is fetched at import or by default: the hub is contacted only when a user names an ``hf-hub:`` source.
Offline (``HF_HUB_OFFLINE=1`` or no network) a cached file is used; a missing one raises
:class:`CheckpointNotFoundError` saying which file to download and where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path

HF_HUB_PREFIX = "hf-hub:"

#: Public repositories of the paper's models (original Lightning checkpoints). Their file lists were not available
#: offline when this was written; name the file explicitly, e.g. ``hf-hub:apardyl/AdaGlimpse/<file>.ckpt``.
KNOWN_HUB_REPOS: dict[str, str] = {
    "apardyl/AdaGlimpse": "trained AdaGlimpse Lightning checkpoints (MAE under mae._orig_mod.*, SAC actor)",
}


class CheckpointNotFoundError(FileNotFoundError):
    """A checkpoint could not be found locally and could not be downloaded."""


def parse_hub_name(name: str) -> tuple[str, str]:
    """Split ``hf-hub:owner/repo/path/to/file`` into ``(repo_id, filename)``.

    Raises:
        ValueError: if the name has no file part, or a ``.`` / ``..`` segment.
    """
    spec = name[len(HF_HUB_PREFIX) :] if name.startswith(HF_HUB_PREFIX) else name
    parts = spec.split("/")
    if len(parts) < 3 or not all(parts):
        raise ValueError(
            f"A hub checkpoint name requires the form 'hf-hub:<owner>/<repo>/<file>', got {name!r}; "
            f"for example 'hf-hub:apardyl/AdaGlimpse/<file>.ckpt'"
        )
    # Refused here, before the hub client is imported: such a name could only be meant to leave the cache folder.
    if any(part in (".", "..") for part in parts):
        raise ValueError(f"A hub checkpoint name requires no '.' or '..' path segments, got {name!r}")
    return "/".join(parts[:2]), "/".join(parts[2:])


def download_from_hub(
    repo_id: str,
    filename: str,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
) -> Path:
    """Path of a hub file in the local HF cache, downloading it if needed and allowed.

    Args:
        repo_id: ``owner/repo``.
        filename: path of the file inside the repository.
        revision: branch, tag or commit (default ``main``).
        cache_dir: HF cache folder (default: ``$HF_HUB_CACHE`` / ``~/.cache/huggingface/hub``).
        local_files_only: never touch the network.

    Raises:
        CheckpointNotFoundError: not cached and not downloadable, with instructions.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=None if cache_dir is None else Path(cache_dir),
                local_files_only=local_files_only,
            )
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        from huggingface_hub.constants import HF_HUB_CACHE

        cache = Path(cache_dir) if cache_dir is not None else Path(HF_HUB_CACHE)
        raise CheckpointNotFoundError(
            f"Checkpoint '{filename}' of hub repository '{repo_id}' is not in the local Hugging Face cache "
            f"({cache}) and could not be downloaded ({type(error).__name__}). On a machine with internet run "
            f"`huggingface-cli download {repo_id} {filename}` (file: https://huggingface.co/{repo_id}/blob/"
            f"{revision or 'main'}/{filename}), then either copy that machine's hub cache folder to {cache} or "
            f"pass the downloaded file's local path instead of 'hf-hub:{repo_id}/{filename}'."
        ) from error


def resolve_checkpoint_path(source: str | os.PathLike[str], local_files_only: bool = False) -> Path:
    """Local path of a checkpoint given as a path or an ``hf-hub:`` name.

    Raises:
        CheckpointNotFoundError: a missing local file, or a hub file that cannot be had.
    """
    text = os.fspath(source)
    if text.startswith(HF_HUB_PREFIX):
        repo_id, filename = parse_hub_name(text)
        return download_from_hub(repo_id, filename, local_files_only=local_files_only)
    path = Path(text).expanduser()
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise CheckpointNotFoundError(
            f"Checkpoint path '{path}' {what}. Pass the path of a .pt/.pth/.ckpt file, or a hub name "
            f"'hf-hub:<owner>/<repo>/<file>'."
        )
    return path
