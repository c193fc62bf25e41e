"""visualize_episode.py and the pictures it shares with env.render() and TensorBoard."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import visualize_episode  # noqa: E402
from tiny_models import tiny_model  # noqa: E402

from adaglimpse_env import GlimpseVectorEnv  # noqa: E402
from adaglimpse_env.models import save_model  # noqa: E402
from adaglimpse_env.rendering import glimpse_heatmap  # noqa: E402
from agents.baselines import make_baseline  # noqa: E402
from agents.evaluation import EpisodeRecorder, run_policy  # noqa: E402

BLUE = (0, 0, 255)


@pytest.fixture(scope="module")
def folder_kwargs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("visualize")
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(root / f"{i}.png")
    Image.new("RGB", (224, 224), BLUE).save(root / "blue.png")
    save_model(root / "tiny.pt", tiny_model(), "reconstruction")
    return [f"data_root={root}", f"checkpoint={root / 'tiny.pt'}", "num_glimpses=3"]


def gif_frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        frames = []
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("RGB")))
    return frames


def test_script_on_a_generated_folder(folder_kwargs: list[str], tmp_path: Path, capsys) -> None:
    argv = ["--env-id", "AdaGlimpse-ImageFolder-v0", "--env-kwargs", *folder_kwargs, "--policies", "random",
            "centre-zoom", "--episodes", "2", "--output", str(tmp_path)]  # fmt: skip
    assert visualize_episode.main(argv) == 0
    for policy in ("random", "centre-zoom"):
        for episode in range(2):
            frames = gif_frames(tmp_path / policy / f"episode_{episode:02d}.gif")
            assert len(frames) == 3 + 1  # the initial frame and one per glimpse
            assert len({frame.tobytes() for frame in frames}) == len(frames)
            sheet = Image.open(tmp_path / policy / f"episode_{episode:02d}.png")
            assert sheet.width > 224 and sheet.height > 224
    comparison = Image.open(tmp_path / "comparison.png")
    assert comparison.width > 2 * 112 and comparison.height > 2 * 112
    assert "centre-zoom: 2 episodes, rmse after 3 glimpses" in capsys.readouterr().out


def test_comparison_only_in_256_colours(folder_kwargs: list[str], tmp_path: Path) -> None:
    argv = ["--env-id", "AdaGlimpse-ImageFolder-v0", "--env-kwargs", *folder_kwargs, "--policies", "raster",
            "--episodes", "1", "--comparison-only", "--palette", "--output", str(tmp_path)]  # fmt: skip
    assert visualize_episode.main(argv) == 0
    assert [path.name for path in tmp_path.iterdir()] == ["comparison.png"]
    assert Image.open(tmp_path / "comparison.png").mode == "P"


def test_script_on_the_embedded_default(tmp_path: Path) -> None:
    argv = ["--policies", "whole-first", "--episodes", "1", "--no-gif", "--output", str(tmp_path)]
    assert visualize_episode.main(argv) == 0
    assert (tmp_path / "whole-first" / "episode_00.png").is_file()
    assert not list(tmp_path.rglob("*.gif"))


def test_script_rejects_bad_arguments(capsys) -> None:
    with pytest.raises(SystemExit):
        visualize_episode.main(["--episodes", "0"])
    assert "--episodes requires a positive count, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="a policy spec requires"):
        visualize_episode.main(["--policies", "nonsense", "--episodes", "1", "--no-gif"])


def test_recorded_frames_draw_boxes_where_info_says(tmp_path: Path) -> None:
    Image.new("RGB", (224, 224), BLUE).save(tmp_path / "blue.png")
    save_model(tmp_path / "tiny.pt", tiny_model(), "reconstruction")
    env = gym.make_vec("AdaGlimpse-ImageFolder-v0", num_envs=1, data_root=str(tmp_path), split="val",
                       checkpoint=str(tmp_path / "tiny.pt"), num_glimpses=3, render_mode="rgb_array")  # fmt: skip
    assert isinstance(env, GlimpseVectorEnv)
    recorder = EpisodeRecorder(render_episodes=None)
    run_policy(env, make_baseline("centre-zoom", env), episodes=1, seed=0, recorder=recorder)
    (frames,) = recorder.frames
    (boxes,) = recorder.boxes
    assert len(frames) == 4 and boxes.shape == (3, 4)
    for step in range(1, 4):
        frame = frames[step]
        for y1, x1, y2, x2 in boxes[:step].tolist():
            middle = (y1 + y2) // 2
            assert tuple(frame[middle, x1]) != BLUE and tuple(frame[middle, x2 - 1]) != BLUE  # box edges drawn
        y1, x1, y2, x2 = boxes[step - 1].tolist()
        seen = frame[:, 224:448]
        assert tuple(seen[(y1 + y2) // 2, (x1 + x2) // 2]) == BLUE  # the seen panel shows the glimpsed pixels
    assert tuple(frames[0][:, 224:448][112, 112]) == (128, 128, 128)  # nothing seen before the first glimpse
    assert len(recorder.scores[0]) == 4
    env.close()


def test_heatmap_peaks_where_the_glimpses_are() -> None:
    boxes = np.array([[0, 0, 32, 32], [0, 0, 32, 32], [150, 150, 224, 224], [-1, -1, -1, -1]])
    heat = glimpse_heatmap(boxes, (224, 224)).astype(int).sum(axis=-1)
    assert heat.shape == (224, 224)
    assert heat[16, 16] > 0 and heat[187, 187] > 0
    assert heat[100, 20] < heat[16, 16] and heat[20, 200] == 0
    assert glimpse_heatmap(np.full((2, 4), -1), (64, 64)).max() == 0  # no glimpse: all black, no division by zero


def test_training_logs_pictures_to_tensorboard(folder_kwargs: list[str], tmp_path: Path) -> None:
    import train_sac
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    argv = ["--env-id", "AdaGlimpse-ImageFolder-v0", "--env-kwargs", *folder_kwargs, "--num-envs", "2",
            "--total-timesteps", "12", "--learning-starts", "6", "--buffer-size", "32", "--batch-size", "4",
            "--eval-every", "6", "--eval-episodes", "3", "--eval-envs", "2", "--checkpoint-every", "1000",
            "--output", str(tmp_path), "--no-progress-bar", "--threads", "1"]  # fmt: skip
    assert train_sac.main(argv) == 0
    (events,) = tmp_path.glob("tensorboard/*/events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
    accumulator.Reload()
    images = set(accumulator.Tags()["images"])
    assert {"eval/episodes", "eval/rmse_by_glimpse", "eval/where_it_looks"} <= images
    sheet = accumulator.Images("eval/episodes")[-1]
    assert sheet.width == 224 * 3 + 4 + 224 and sheet.height > 2 * 224  # two episodes: frame + score curve each


def test_run_policy_walks_an_unshuffled_split_without_repeating(tmp_path: Path) -> None:
    for index in range(6):
        Image.new("RGB", (32, 32), (40 * index, 0, 0)).save(tmp_path / f"{index}.png")
    save_model(tmp_path / "tiny.pt", tiny_model(), "reconstruction")
    env = gym.make_vec("AdaGlimpse-ImageFolder-v0", num_envs=2, data_root=str(tmp_path), split="val",
                       checkpoint=str(tmp_path / "tiny.pt"), num_glimpses=1, render_mode="rgb_array")  # fmt: skip
    recorder = EpisodeRecorder(render_episodes=None)
    run_policy(env, make_baseline("whole-first", env), episodes=6, seed=0, recorder=recorder)
    reds = [int(frames[0][5, 5, 0]) for frames in recorder.frames]  # the image's red level, top-left pixel
    assert sorted(reds) == [0, 40, 80, 120, 160, 200]  # three rounds of two envs: every image once
    env.close()
