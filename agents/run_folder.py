"""A training run's output folder: where each file lives, atomic checkpoints, resume validation, and clean-up that
only ever deletes files the run itself wrote.

Layout of a run folder ``d``::

    d/run_manifest.json                 every file a run of this folder wrote (written before the file itself)
    d/progress.json                     {"num_timesteps": N, "replay_buffer": bool}: the commit of checkpoint N
    d/checkpoints/model_N.zip           the SB3 model at step N
    d/checkpoints/replay_buffer_N.npz   its replay buffer, plain arrays (agents.replay.save_replay_buffer)
    d/model.zip, d/replay_buffer.npz    hard links to the committed checkpoint
    d/config.json, d/evaluation.json    the run's settings and held-out results

Ownership: a name enters the manifest *before* its file is written, so after any crash every file (and every
``.<name>.*.tmp`` temporary) the run may have left is listed. Clean-up removes listed files only; a file the run did
not write (notes, the env's own ``checkpoint=`` file kept in ``checkpoints/``) is never touched, and a fresh run
refuses to start where it would overwrite one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from adaglimpse_env.atomic import TEMPORARY_SUFFIX, atomic_write, fsync_directory, temporary_prefix
from agents import replay
from agents.replay import ReplayBufferFileError, read_replay_meta
from agents.sb3_files import SB3FileError, read_sb3_data

MANIFEST = "run_manifest.json"
MANIFEST_FORMAT = "adaglimpse-env/run-manifest"
PROGRESS = "progress.json"
CHECKPOINT_FOLDER = "checkpoints"
PUBLISHED_MODEL = "model.zip"
PUBLISHED_BUFFER = "replay_buffer.npz"
_CHECKPOINT_NAME = re.compile(rf"{CHECKPOINT_FOLDER}/(model_(\d+)\.zip|replay_buffer_(\d+)\.npz)")


class RunFolderError(ValueError):
    """A run folder cannot be used as asked: a corrupt record, a broken checkpoint chain, or files it did not write."""


def checkpoint_names(step: int) -> tuple[str, str]:
    """``(model, replay buffer)`` names, relative to the run folder, of the checkpoint at ``step``."""
    return f"{CHECKPOINT_FOLDER}/model_{step}.zip", f"{CHECKPOINT_FOLDER}/replay_buffer_{step}.npz"


class RunFolder:
    """The output folder of one training run.

    Args:
        root: the folder (created on the first write).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------------------------------------ paths
    def path(self, name: str) -> Path:
        """The absolute path of ``name`` (relative to the run folder)."""
        return self.root / name

    def checkpoint_paths(self, step: int) -> tuple[Path, Path]:
        """``(model, replay buffer)`` files of the checkpoint at ``step``."""
        model, buffer = checkpoint_names(step)
        return self.path(model), self.path(buffer)

    # ------------------------------------------------------------------------------------------- ownership
    def owned(self) -> set[str]:
        """The names the manifest lists (empty when there is none).

        Raises:
            RunFolderError: the manifest exists but is not a manifest of ours.
        """
        path = self.path(MANIFEST)
        if not path.exists():
            return set()
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise self._unreadable(path, error) from error
        files = record.get("files") if isinstance(record, dict) else None
        valid = isinstance(files, list) and all(isinstance(name, str) for name in files)
        if not valid or record.get("format") != MANIFEST_FORMAT:
            raise RunFolderError(
                f"run folder {self.root}: {path} requires a manifest of format {MANIFEST_FORMAT!r} with a list of "
                f"file names, got {str(record)[:200]}; nothing was deleted. Move the folder's files away or pass "
                "another --output"
            )
        assert isinstance(files, list)
        return set(files)

    def _unreadable(self, path: Path, error: BaseException) -> RunFolderError:
        return RunFolderError(
            f"run folder {self.root}: {path} is unreadable ({type(error).__name__}: {str(error)[:120]}); nothing "
            "was deleted. Move the folder's files away or pass another --output"
        )

    def _set_owned(self, names: set[str]) -> None:
        record = {"format": MANIFEST_FORMAT, "files": sorted(names)}
        atomic_write(self.path(MANIFEST), lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))

    def claim(self, *names: str) -> None:
        """List ``names`` in the manifest (before writing them: a crash mid-write leaves only listed files)."""
        owned = self.owned()
        if not set(names) <= owned:
            self._set_owned(owned | set(names))

    def write(self, name: str, write: Any) -> None:
        """Claim ``name``, then write it atomically with ``write(tmp_path)``."""
        self.claim(name)
        atomic_write(self.path(name), write)

    def write_json(self, name: str, value: Any) -> None:
        """Claim and atomically write ``value`` as indented JSON."""
        self.write(name, lambda tmp: Path(tmp).write_text(json.dumps(value, indent=2) + "\n"))

    def remove_owned(self, keep: set[str]) -> None:
        """Delete every listed file not in ``keep``, and the temporaries of interrupted writes of listed names;
        nothing the manifest does not list is touched."""
        owned = self.owned()
        removed = set()
        for name in sorted(owned - keep - {MANIFEST}):
            path = self.path(name)
            for temporary in path.parent.glob(f"{temporary_prefix(path)}*{TEMPORARY_SUFFIX}"):
                temporary.unlink(missing_ok=True)
            if _CHECKPOINT_NAME.fullmatch(name) or name in (PROGRESS, PUBLISHED_MODEL, PUBLISHED_BUFFER):
                path.unlink(missing_ok=True)
                removed.add(name)
        for name in (owned & keep) | {MANIFEST}:  # a kill mid-write of a kept name leaves a temporary too
            path = self.path(name)
            for temporary in path.parent.glob(f"{temporary_prefix(path)}*{TEMPORARY_SUFFIX}"):
                temporary.unlink(missing_ok=True)
        if removed:
            if self.path(CHECKPOINT_FOLDER).is_dir():
                fsync_directory(self.path(CHECKPOINT_FOLDER))
            self._set_owned(owned - removed)

    # -------------------------------------------------------------------------------------------- progress
    def read_progress(self) -> dict[str, Any] | None:
        """The commit record (``None`` when there is none).

        Raises:
            RunFolderError: it is unreadable, not JSON, or lacks a valid ``num_timesteps`` / ``replay_buffer``.
        """
        path = self.path(PROGRESS)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise RunFolderError(
                f"run folder {self.root}: {path} is unreadable ({type(error).__name__}: {str(error)[:120]})"
            ) from error
        step = record.get("num_timesteps") if isinstance(record, dict) else None
        if (
            not isinstance(step, int)
            or isinstance(step, bool)
            or step < 0
            or not isinstance(record.get("replay_buffer"), bool)
        ):
            raise RunFolderError(
                f'run folder {self.root}: {path} requires {{"num_timesteps": <int >= 0>, "replay_buffer": '
                f"<true|false>}}, got {str(record)[:200]}"
            )
        return record

    def checkpoint_problem(self, step: int, with_buffer: bool) -> str | None:
        """What is wrong with the checkpoint files of ``step`` (``None``: complete and consistent)."""
        model_path, buffer_path = self.checkpoint_paths(step)
        try:
            saved = read_sb3_data(model_path).get("num_timesteps")
        except SB3FileError as error:
            return str(error)
        if saved != step:
            return f"{model_path} holds step {saved}, not {step}"
        if with_buffer:
            try:
                meta = read_replay_meta(buffer_path)
            except ReplayBufferFileError as error:
                return str(error)
            if meta.get("num_timesteps") != step:
                return f"{buffer_path} was saved at step {meta.get('num_timesteps')}, not {step}"
        return None

    def latest_complete_checkpoint(self) -> int | None:
        """The newest step whose model (and replay buffer, if one was written) are complete and agree, whatever
        ``progress.json`` says."""
        owned = self.owned()
        steps = {
            int(found.group(2)) for name in owned if (found := _CHECKPOINT_NAME.fullmatch(name)) and found.group(2)
        }
        for step in sorted(steps, reverse=True):
            with_buffer = checkpoint_names(step)[1] in owned and self.checkpoint_paths(step)[1].exists()
            if self.checkpoint_problem(step, with_buffer) is None:
                return step
        return None

    def remove_stale(self, progress: dict[str, Any] | None) -> None:
        """Remove what killed or superseded saves of this run left: every listed checkpoint but the committed one
        and every temporary of a listed name."""
        keep = {PUBLISHED_MODEL, PUBLISHED_BUFFER, PROGRESS, "config.json", "evaluation.json"}
        if progress is not None:
            keep |= set(checkpoint_names(progress["num_timesteps"]))
        self.remove_owned(keep)

    def resumable_progress(self) -> dict[str, Any] | None:
        """Validate the whole chain (manifest, progress record, model, replay buffer) without changing anything.

        Returns:
            The progress record, or ``None`` when nothing was committed yet.

        Raises:
            RunFolderError: naming the broken file and the last complete checkpoint found.
        """
        self.owned()
        try:
            progress = self.read_progress()
            if progress is None:
                return None
            if PROGRESS not in self.owned():
                raise RunFolderError(f"{self.path(PROGRESS)} is not listed in {self.path(MANIFEST)}")
            problem = self.checkpoint_problem(progress["num_timesteps"], progress["replay_buffer"])
            if problem is not None:
                raise RunFolderError(f"{self.path(PROGRESS)} names step {progress['num_timesteps']}, but {problem}")
        except RunFolderError as error:
            latest = self.latest_complete_checkpoint()
            found = (
                f"the last complete checkpoint found is step {latest} ({', '.join(checkpoint_names(latest))}): to "
                f'resume from it, write {{"num_timesteps": {latest}, "replay_buffer": true}} to '
                f"{self.path(PROGRESS)}"
                if latest is not None
                else "no complete checkpoint was found"
            )
            raise RunFolderError(
                f"cannot resume from {self.root}: {error}; nothing was changed; {found}, or run without --resume "
                "to start afresh"
            ) from error
        return progress

    def prepare_fresh(self) -> int | None:
        """Make the folder ready for a new run: drop the previous run's files (those its manifest lists).

        Returns:
            The step of the previous run's committed checkpoint that was dropped, if any.

        Raises:
            RunFolderError: a file this run would write exists and no run of this folder wrote it.
        """
        owned = self.owned()
        ours = {PROGRESS, PUBLISHED_MODEL, PUBLISHED_BUFFER, "config.json", "evaluation.json"}
        candidates = [self.path(name) for name in ours]
        if self.path(CHECKPOINT_FOLDER).is_dir():
            candidates += list(self.path(CHECKPOINT_FOLDER).iterdir())
        foreign = sorted(
            str(path.relative_to(self.root))
            for path in candidates
            if path.exists()
            and str(path.relative_to(self.root)) not in owned
            and (path.name in ours or _CHECKPOINT_NAME.fullmatch(str(path.relative_to(self.root))))
        )
        if foreign:
            raise RunFolderError(
                f"run folder {self.root} holds {', '.join(foreign)}, which a run would overwrite but no run of this "
                f"folder wrote (no {MANIFEST} lists it); move them away or pass another --output"
            )
        try:
            progress = self.read_progress()
            dropped = progress["num_timesteps"] if progress else None
        except RunFolderError as error:
            print(f"{error}; a fresh run replaces it")
            dropped = None
        self.remove_owned(keep={"config.json", "evaluation.json"})
        return dropped

    # ---------------------------------------------------------------------------------------------- saving
    def save_checkpoint(self, model: Any, save_replay_buffer: bool) -> None:
        """Save a checkpoint of ``model`` at its ``num_timesteps`` N that a kill at any instant cannot corrupt.

        Writes ``checkpoints/model_N.zip`` and (optionally) ``checkpoints/replay_buffer_N.npz``, each atomically,
        then commits by replacing ``progress.json``. Only then do ``model.zip`` and ``replay_buffer.npz`` become
        the new files (hard links) and the previous checkpoint goes: two files cannot be replaced together
        atomically, so overwriting the published pair in place would let a kill between them pair a new model with
        an old buffer.
        """
        step = int(model.num_timesteps)
        model_name, buffer_name = checkpoint_names(step)
        with_buffer = save_replay_buffer and getattr(model, "replay_buffer", None) is not None
        names = [model_name, PROGRESS, PUBLISHED_MODEL] + ([buffer_name, PUBLISHED_BUFFER] if with_buffer else [])
        self.claim(*names)
        atomic_write(self.path(model_name), lambda tmp: model.save(tmp))
        if with_buffer:
            atomic_write(self.path(buffer_name), lambda tmp: replay.save_replay_buffer(model.replay_buffer, tmp, step))
        progress = {"num_timesteps": step, "replay_buffer": with_buffer}
        atomic_write(self.path(PROGRESS), lambda tmp: Path(tmp).write_text(json.dumps(progress) + "\n"))
        self._publish(self.path(model_name), self.path(PUBLISHED_MODEL))
        if with_buffer:
            self._publish(self.path(buffer_name), self.path(PUBLISHED_BUFFER))
        else:
            self.path(PUBLISHED_BUFFER).unlink(missing_ok=True)  # never pair the new model with an old buffer
        self.remove_owned(keep={*names, "config.json", "evaluation.json"})

    @staticmethod
    def _publish(source: Path, destination: Path) -> None:
        """Atomically make ``destination`` the file ``source`` (a hard link: no second copy on disk)."""

        def link(tmp: str) -> None:
            Path(tmp).unlink()
            try:
                os.link(source, tmp)
            except OSError:  # a filesystem without hard links
                shutil.copyfile(source, tmp)

        atomic_write(destination, link)


def checkpoint_paths(output: str | Path, step: int) -> tuple[Path, Path]:
    """``(model, replay buffer)`` files of the checkpoint at ``step`` in the run folder ``output``."""
    return RunFolder(output).checkpoint_paths(step)


def save_checkpoint(model: Any, output: str | Path, save_replay_buffer: bool) -> None:
    """:meth:`RunFolder.save_checkpoint` of the run folder ``output``."""
    RunFolder(output).save_checkpoint(model, save_replay_buffer)
