"""The run folder never loses a file: a fresh run deletes only what a run of the folder wrote (its manifest),
``--resume`` validates the whole chain before touching anything, and corrupt records are clear errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import train_sac

from agents.config import output_files
from agents.run_folder import MANIFEST, RunFolder, RunFolderError


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (but TensorBoard logs) with its content."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "tensorboard" not in path.parts
    }


@pytest.fixture(scope="module")
def finished_run(sac_args: Callable[..., list[str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose run finished at step 32 (checkpoints every 16)."""
    output = tmp_path_factory.mktemp("finished") / "run"
    assert train_sac.main(sac_args(output, 32)) == 0
    return output


@pytest.fixture
def run(finished_run: Path, tmp_path: Path) -> Path:
    output = tmp_path / "run"
    shutil.copytree(finished_run, output)
    return output


def test_fresh_run_keeps_every_file_it_did_not_write(
    sac_args: Callable[..., list[str]], env_kwargs: dict[str, Any], tmp_path: Path, capsys: Any
) -> None:
    output = tmp_path / "run"
    (output / "checkpoints").mkdir(parents=True)
    own_model = output / "checkpoints" / "mae.pt"  # the env's checkpoint= file, kept in the run folder
    shutil.copyfile(env_kwargs["checkpoint"], own_model)
    (output / "notes.txt").write_text("keep me")
    (output / "checkpoints" / "README").write_text("mine")
    (output / ".hidden.tmp").write_text("not a temporary of the run")
    args = sac_args(output, 16)
    args[args.index(f"checkpoint={env_kwargs['checkpoint']}")] = f"checkpoint={own_model}"
    before = snapshot(output)
    for _ in range(2):  # the second fresh run drops the first run's checkpoint, nothing else
        assert train_sac.main(args) == 0
        after = snapshot(output)
        assert {name: after[name] for name in before} == before
    assert "dropping its checkpoint at 16 env steps" in capsys.readouterr().out
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["README", "mae.pt", "model_16.zip",
                                                                          "replay_buffer_16.npz"]  # fmt: skip


@pytest.mark.parametrize("name", ["progress.json", "model.zip", "checkpoints/model_16.zip", "config.json"])
def test_fresh_run_refuses_to_overwrite_a_file_no_run_wrote(
    sac_args: Callable[..., list[str]], tmp_path: Path, name: str
) -> None:
    output = tmp_path / "run"
    (output / name).parent.mkdir(parents=True, exist_ok=True)
    (output / name).write_text("someone else's")
    with pytest.raises(RunFolderError, match=rf"holds {name}, which a run would overwrite but no run of this folder"):
        train_sac.main(sac_args(output, 16))
    assert (output / name).read_text() == "someone else's"


def test_resume_with_progress_naming_missing_files_changes_nothing(
    run: Path, sac_args: Callable[..., list[str]]
) -> None:
    (run / "progress.json").write_text('{"num_timesteps": 999, "replay_buffer": true}\n')
    before = snapshot(run)
    with pytest.raises(RunFolderError) as raised:
        train_sac.main([*sac_args(run, 64), "--resume"])
    message = str(raised.value)
    assert "progress.json names step 999, but SB3 zip" in message and "model_999.zip" in message
    assert "the last complete checkpoint found is step 32 (checkpoints/model_32.zip" in message
    assert "nothing was changed" in message and "\n" not in message
    assert snapshot(run) == before


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"num_timesteps": 3', "is unreadable"),
        ("", "is unreadable"),
        ("[32]", "requires"),
        ('{"num_timesteps": 32}', "requires"),
        ('{"num_timesteps": -1, "replay_buffer": true}', "requires"),
        ('{"num_timesteps": "32", "replay_buffer": true}', "requires"),
        ('{"num_timesteps": true, "replay_buffer": true}', "requires"),
        (b"\xff\xfe", "is unreadable"),
    ],
)
def test_corrupt_progress_is_a_clear_error_on_resume_and_no_block_to_a_fresh_run(
    run: Path, sac_args: Callable[..., list[str]], content: str | bytes, reason: str, capsys: Any
) -> None:
    path = run / "progress.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = snapshot(run)
    with pytest.raises(RunFolderError, match=rf"cannot resume from .*progress.json {reason}.*step 32"):
        train_sac.main([*sac_args(run, 48), "--resume"])
    assert snapshot(run) == before
    # A fresh run in the same folder reports it and replaces it (the manifest proves the folder's run wrote it).
    RunFolder(run).prepare_fresh()
    assert "progress.json" in capsys.readouterr().out
    assert not path.exists() and not (run / "checkpoints" / "model_32.zip").exists()


def test_truncated_replay_buffer_is_named_on_resume(run: Path, sac_args: Callable[..., list[str]]) -> None:
    buffer = run / "checkpoints" / "replay_buffer_32.npz"
    content = buffer.read_bytes()
    (run / "replay_buffer.npz").unlink()  # a hard link to the same file: truncate a copy instead
    buffer.unlink()
    buffer.write_bytes(content[: len(content) // 3])
    before = snapshot(run)
    with pytest.raises(RunFolderError, match=r"replay buffer '.*replay_buffer_32.npz' could not be read.*no complete"):
        train_sac.main([*sac_args(run, 48), "--resume"])
    assert snapshot(run) == before


@pytest.mark.parametrize("content", ["{", '{"format": "x", "files": []}', '{"format": "adaglimpse-env/run-manifest"}'])
def test_corrupt_manifest_deletes_nothing(run: Path, sac_args: Callable[..., list[str]], content: str) -> None:
    (run / MANIFEST).write_text(content)
    before = snapshot(run)
    for resume in ([], ["--resume"]):
        with pytest.raises(RunFolderError, match=rf"{MANIFEST}.* nothing was deleted"):
            train_sac.main([*sac_args(run, 48), *resume])
        assert snapshot(run) == before


def test_resume_after_a_clean_finish_continues(run: Path, sac_args: Callable[..., list[str]], capsys: Any) -> None:
    (run / ".notes.md.abc.tmp").write_text("half")  # looks like a temporary, but of no file the run wrote
    (run / "notes.md").write_text("mine")
    assert train_sac.main([*sac_args(run, 48), "--resume"]) == 0
    assert "resumed" in capsys.readouterr().out
    assert json.loads((run / "progress.json").read_text())["num_timesteps"] == 48
    assert (run / "notes.md").read_text() == "mine"
    assert (run / ".notes.md.abc.tmp").exists()  # not the run's: left alone


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("r.seed1", ["r.seed1.json", "r.seed1.csv"]), ("out/r", ["out/r.json", "out/r.csv"]),
     ("r.json", ["r.json", "r.csv"])],
)  # fmt: skip
def test_evaluate_outputs_keep_dotted_prefixes(prefix: str, expected: list[str]) -> None:
    assert [str(path) for path in output_files(Path(prefix), (".json", ".csv"))] == expected
