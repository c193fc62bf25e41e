"""An output directory that cannot hold the run fails train_sac.py and pretrain_mae.py at start-up, before any
model, data or training, with a message naming the script, the path, the reason and the flag to change."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path

import pretrain_mae
import pytest
import train_sac

from agents.preflight import OutputDirectoryError

ROOT = Path(__file__).resolve().parents[2]
# Flags whose data do not exist: a check that runs first fails with its own message, not with a data error.
MISSING_DATA = ["--env-kwargs", "data_root=/nonexistent/images", "checkpoint=/nonexistent/model.pt"]
PRETRAIN_MISSING_DATA = ["--dataset", "folder", "--data-root", "/nonexistent/images", "--model-size", "tiny"]
skip_as_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root bypasses permissions: it writes to read-only directories",
)


def run_main(script: str, args: list[str]) -> None:
    if script == "train_sac.py":
        train_sac.main(["--env-id", "AdaGlimpse-ImageFolder-v0", *MISSING_DATA, *args])
    else:
        pretrain_mae.main([*PRETRAIN_MISSING_DATA, *args])


@pytest.mark.parametrize("script", ["train_sac.py", "pretrain_mae.py"])
def test_output_that_is_a_file_fails_first(script: str, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    expected = f"{script} requires a writable output directory, got {blocker} (it is an existing file); pass --output"
    with pytest.raises(OutputDirectoryError, match=re.escape(expected)):
        run_main(script, ["--output", str(blocker)])
    with pytest.raises(OutputDirectoryError, match=r"got .*/file/run \(cannot create it: Not a directory\)"):
        run_main(script, ["--output", str(blocker / "run")])
    assert blocker.read_text() == "not a directory"


@skip_as_root
@pytest.mark.parametrize("script", ["train_sac.py", "pretrain_mae.py"])
def test_read_only_output_fails_first(script: str, tmp_path: Path) -> None:
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        with pytest.raises(OutputDirectoryError, match=r"\(cannot create a file in it: Permission denied\); pass"):
            run_main(script, ["--output", str(read_only)])
        with pytest.raises(OutputDirectoryError, match=r"/run \(cannot create it: Permission denied\); pass"):
            run_main(script, ["--output", str(read_only / "run")])
    finally:
        read_only.chmod(0o755)
    assert list(read_only.iterdir()) == []


# Pseudo file systems answer mkdir with ENOENT or EPERM before they check read-only: not what a user's disk does.
PSEUDO_FILE_SYSTEMS = ("proc", "sysfs", "cgroup", "cgroup2", "autofs", "devpts", "mqueue", "securityfs", "debugfs")


def read_only_mount() -> Path | None:
    """A directory on a read-only file system that refuses a new entry with EROFS, even to root; None if none."""
    if not Path("/proc/mounts").exists():
        return None
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) < 4 or "ro" not in fields[3].split(",") or fields[2].startswith(PSEUDO_FILE_SYSTEMS):
            continue
        mount_point = Path(fields[1].replace("\\040", " "))
        if str(mount_point).startswith(("/proc", "/sys", "/dev")):
            continue
        try:
            if not mount_point.is_dir() or not os.statvfs(mount_point).f_flag & os.ST_RDONLY:
                continue  # e.g. mounted over by a writable file system
            os.mkdir(mount_point / ".adaglimpse_probe")
        except OSError as error:
            if error.errno == errno.EROFS:
                return mount_point
            continue
        os.rmdir(mount_point / ".adaglimpse_probe")  # writable after all
    return None


@pytest.mark.parametrize("script", ["train_sac.py", "pretrain_mae.py"])
def test_read_only_file_system_fails_first(script: str) -> None:
    # Unlike a chmod-ed folder, a read-only mount refuses root too, so this runs where the suite runs as root.
    mount_point = read_only_mount()
    if mount_point is None:
        pytest.skip("no read-only file system is mounted on this machine")
    with pytest.raises(OutputDirectoryError, match=r"\(cannot create (it|a file in it): Read-only file system\); pass"):
        run_main(script, ["--output", str(mount_point / "adaglimpse_run")])
    with pytest.raises(OutputDirectoryError, match=r"\(cannot create a file in it: Read-only file system\); pass"):
        run_main(script, ["--output", str(mount_point)])


DiskUsage = namedtuple("DiskUsage", "total used free")


def fake_disk(free: int) -> Callable[[str | os.PathLike[str]], DiskUsage]:
    return lambda path: DiskUsage(100 * 2**30, 100 * 2**30 - free, free)


def test_train_sac_low_disk_fails_before_training(
    sac_args: Callable[..., list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 4096-transition buffer of the tiny env is 131 MB: two checkpoints with it do not fit in 200 MiB, without it
    # they do (the buffer arrays are never touched before the check, so they cost no memory either).
    monkeypatch.setattr(shutil, "disk_usage", fake_disk(200 * 2**20))
    output = tmp_path / "run"
    with pytest.raises(OutputDirectoryError) as raised:
        train_sac.main(sac_args(output, 16, buffer_size=4096))
    message = str(raised.value)
    assert message.startswith("train_sac.py requires an output directory with ")
    assert f"free, got {output} (200.0 MiB free; a checkpoint takes up to " in message
    assert message.endswith(
        "pass --output <dir> on a disk with more room, --no-save-replay-buffer, or a smaller --buffer-size"
    )
    assert list(output.iterdir()) == []  # no config, no TensorBoard log, no checkpoint: nothing ran
    assert train_sac.main([*sac_args(output, 16, buffer_size=4096), "--no-save-replay-buffer"]) == 0
    assert (output / "progress.json").read_text() == '{"num_timesteps": 16, "replay_buffer": false}\n'


def test_pretrain_low_disk_fails_before_building_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", fake_disk(50 * 2**20))  # one tiny checkpoint is 88 MiB
    output = tmp_path / "pretrain"
    with pytest.raises(OutputDirectoryError) as raised:
        run_main("pretrain_mae.py", ["--output", str(output)])
    message = str(raised.value)
    assert message.startswith("pretrain_mae.py requires an output directory with ")
    assert f"got {output} (50.0 MiB free; a checkpoint takes 88.5 MiB and the next one" in message
    assert list(output.iterdir()) == []


@pytest.mark.slow  # each script starts a fresh interpreter (torch, SB3): about 7 s on 2 busy cores
@pytest.mark.parametrize("script", ["train_sac.py", "pretrain_mae.py"])
def test_command_line_prints_one_line_and_exits_1(script: str, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), "--output", str(blocker)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"{script} requires a writable output directory, got {blocker} (it is an existing file); pass --output "
        "<dir> with a directory you can write to"
    )
