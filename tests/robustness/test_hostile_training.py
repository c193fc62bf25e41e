"""A training run on a folder holding every hostile image finishes: broken files are skipped, odd ones are used.

The rest of the suite checks each case on the library's public paths; this checks the promise users care about,
that no such file crashes ``scripts/train_sac.py`` or ``scripts/pretrain_mae.py`` from inside torch.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
from hostile_inputs import VALID_IMAGES, write_broken_files, write_good_image
from tiny_models import tiny_model

from adaglimpse_env.datasets import scan_images
from adaglimpse_env.models import load_model, save_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import pretrain_mae
import train_sac


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every broken file this machine can make, every odd-but-valid image, and one plain photo."""
    folder = tmp_path_factory.mktemp("hostile_training")
    write_broken_files(folder)
    for valid in VALID_IMAGES:
        valid.write(folder / valid.name)
    write_good_image(folder)
    return folder


def num_broken(folder: Path) -> int:
    return len(scan_images(folder)) - len(VALID_IMAGES) - 1


@pytest.mark.timeout(300)
def test_train_sac_runs_through_a_hostile_folder(hostile_folder: Path, tmp_path: Path) -> None:
    assert num_broken(hostile_folder) >= 10
    checkpoint = tmp_path / "tiny.pt"
    save_model(checkpoint, tiny_model(), "reconstruction")
    args = [
        "--env-id", "AdaGlimpse-ImageFolder-v0",
        "--env-kwargs", f"data_root={hostile_folder}", f"checkpoint={checkpoint}", "num_glimpses=2",
        "--num-envs", "2", "--total-timesteps", "48", "--learning-starts", "8", "--buffer-size", "64",
        "--batch-size", "8", "--eval-every", "24", "--eval-episodes", "2", "--eval-envs", "2",
        "--checkpoint-every", "16", "--output", str(tmp_path / "run"), "--no-progress-bar", "--threads", "1",
    ]  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train_sac.main(args) == 0
    skipped = {str(w.message) for w in caught if "Skipping unreadable image" in str(w.message)}
    assert skipped, "the broken files should have been met and skipped with a warning"
    assert all(str(hostile_folder) in message for message in skipped)
    assert json.loads((tmp_path / "run" / "progress.json").read_text())["num_timesteps"] == 48
    assert json.loads((tmp_path / "run" / "evaluation.json").read_text())


def pretrain_args(folder: Path, output: Path, steps: int) -> list[str]:
    return [
        "--dataset", "folder", "--data-root", str(folder), "--model-size", "tiny", "--steps", str(steps),
        "--batch-size", "4", "--warmup-steps", "1", "--num-workers", "0", "--log-every", "1",
        "--eval-every", "1000", "--checkpoint-every", "5", "--eval-glimpses", "0", "2", "--min-glimpses", "2",
        "--max-glimpses", "2", "--output", str(output), "--threads", "1",
    ]  # fmt: skip


@pytest.mark.timeout(300)
def test_pretrain_mae_runs_through_a_hostile_folder(hostile_folder: Path, tmp_path: Path) -> None:
    # 15 batches of 4 are over two passes through the files: broken ones are met again, counted, not re-warned.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert pretrain_mae.main(pretrain_args(hostile_folder, tmp_path, 15)) == 0
    warned = [str(w.message) for w in caught if "Skipping unreadable image" in str(w.message)]
    assert warned and all(str(hostile_folder) in message for message in warned)
    assert len(warned) == len(set(warned))  # one warning per file
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == list(range(1, 16))
    counts = [record["skipped_images"] for record in log]
    assert counts == sorted(counts) and counts[-1] > len(warned)  # every skip counted, repeats included
    assert load_model(tmp_path / "model.pt").metadata["step"] == 15


@pytest.mark.timeout(300)
def test_pretrain_mae_trains_when_one_file_among_many_broken_ones_is_readable(tmp_path: Path) -> None:
    # Most batches hold no readable image; the run must go on as long as some file still decodes.
    folder = tmp_path / "sparse"
    write_broken_files(folder)
    write_good_image(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert pretrain_mae.main(pretrain_args(folder, tmp_path / "run", 6)) == 0
    assert load_model(tmp_path / "run" / "model.pt").metadata["step"] == 6


@pytest.mark.timeout(120)
def test_pretrain_mae_stops_when_no_training_image_is_readable(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    write_broken_files(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(RuntimeError, match=r"requires readable training images, got none: all \d+ files of "):
            pretrain_mae.main(pretrain_args(folder, tmp_path / "run", 4))
