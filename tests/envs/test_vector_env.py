"""Episode mechanics of the vector env and its single-env view: numbers, determinism, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import tiny_model, write_images

from adaglimpse_env import EpisodeConfig, GlimpseEnv, GlimpseVectorEnv
from adaglimpse_env.datasets import ImageSource, TransformConfig, image_folder, scan_images


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_images(root, 5, seed=3)
    return root


def vector_env(
    folder: Path, num_envs: int = 3, augment: bool = True, shuffle: bool = True, **episode
) -> GlimpseVectorEnv:
    episode.setdefault("num_glimpses", 3)
    autoreset = episode.pop("autoreset_mode", "next_step")
    return GlimpseVectorEnv(
        num_envs,
        tiny_model(),
        image_folder(folder, TransformConfig(train=augment)),
        EpisodeConfig(**episode),
        shuffle=shuffle,
        autoreset_mode=autoreset,
    )


def rollout(env: GlimpseVectorEnv, seed: int, steps: int, action_seed: int = 0) -> list:
    rng = np.random.default_rng(action_seed)
    observation, _ = env.reset(seed=seed)
    trace = [observation]
    for _ in range(steps):
        action = rng.uniform(-1, 1, size=(env.num_envs, 3)).astype(np.float32)
        observation, reward, terminated, _truncated, info = env.step(action)
        trace += [observation, reward, terminated, info["score"]]
    return trace


def assert_traces_equal(a: list, b: list) -> None:
    for x, y in zip(a, b, strict=True):
        if isinstance(x, dict):
            for key in x:
                np.testing.assert_array_equal(x[key], y[key])
        else:
            np.testing.assert_array_equal(x, y)


def test_same_seed_same_rollout_and_different_seed_differs(folder: Path) -> None:
    env = vector_env(folder)
    first, second = rollout(env, seed=7, steps=8), rollout(env, seed=7, steps=8)
    assert_traces_equal(first, second)
    other = rollout(env, seed=8, steps=8)
    assert not np.array_equal(first[0]["latent"], other[0]["latent"]) or not np.array_equal(
        first[1]["patches"], other[1]["patches"]
    )


def test_vector_env_equals_single_envs(folder: Path) -> None:
    files = scan_images(folder)
    envs = vector_env(folder, num_envs=3, augment=False, shuffle=False)
    observation, info = envs.reset(seed=0)
    singles = []
    for b in range(3):
        single = GlimpseEnv(
            model=tiny_model(),
            image_source=ImageSource([files[b]], transform=TransformConfig(train=False)),
            episode=EpisodeConfig(num_glimpses=3),
            shuffle=False,
        )
        single_observation, single_info = single.reset(seed=0)
        for key in observation:
            np.testing.assert_allclose(observation[key][b], single_observation[key], rtol=1e-5, atol=1e-5)
        singles.append(single)
    rng = np.random.default_rng(1)
    for _ in range(3):
        actions = rng.uniform(-1, 1, size=(3, 3)).astype(np.float32)
        observation, reward, terminated, _, info = envs.step(actions)
        for b, single in enumerate(singles):
            single_observation, single_reward, single_terminated, _, single_info = single.step(actions[b])
            for key in observation:
                np.testing.assert_allclose(observation[key][b], single_observation[key], rtol=1e-5, atol=1e-5)
            assert reward[b] == pytest.approx(single_reward, abs=1e-4)
            assert terminated[b] == single_terminated
            np.testing.assert_array_equal(info["glimpse_boxes"][b], single_info["glimpse_boxes"])


@pytest.mark.parametrize("reward", ["diff", "final", "raw"])
def test_rewards_telescope_to_final_minus_initial(folder: Path, reward: str) -> None:
    env = vector_env(folder, num_envs=2, num_glimpses=4, reward=reward)
    _, info = env.reset(seed=3)
    initial = info["score"].copy()
    scores, rewards = [], []
    for _ in range(4):
        _, r, terminated, _, info = env.step(env.action_space.sample())
        rewards.append(r)
        scores.append(info["score"].copy())
    assert terminated.all()
    rewards_array, scores_array = np.array(rewards, dtype=np.float64), np.array(scores)
    if reward == "raw":
        np.testing.assert_allclose(rewards_array, scores_array, rtol=1e-5)
    else:
        np.testing.assert_allclose(rewards_array.sum(axis=0), scores_array[-1] - initial, rtol=1e-4, atol=1e-3)
    if reward == "final":
        assert np.all(rewards_array[:-1] == 0)
    np.testing.assert_allclose(info["initial_score"], initial)
    assert np.any(np.abs(scores_array[-1] - initial) > 1e-3)  # the glimpses did change the prediction


def test_step_zero_state(folder: Path) -> None:
    env = vector_env(folder, num_envs=2)
    observation, info = env.reset(seed=0)
    assert np.all(observation["mask"] == 1)
    assert np.all(observation["coords"] == 0) and np.all(observation["patches"] == 0)
    assert np.all(observation["importance"] == 0)
    assert np.any(observation["latent"][:, 0] != 0) and np.all(observation["latent"][:, 1:] == 0)
    assert np.all(info["num_glimpses"] == 0) and np.all(info["pixel_fraction"] == 0)
    assert np.all(info["glimpse_boxes"] == -1)
    # Step 0 is a real evaluation: its score is the empty-state prediction's -RMSE for each image.
    assert np.all(info["score"] < 0) and info["score"][0] != info["score"][1]


def test_boxes_and_pixel_fraction_hand_computed(folder: Path) -> None:
    env = vector_env(folder, num_envs=1, num_glimpses=3)
    env.reset(seed=0)
    # (x, y, scale) = (-1, -1, -1) -> original (0, 0, 0) -> 32 px glimpse at the top-left corner.
    observation, _, _, _, info = env.step(np.array([[-1, -1, -1]], dtype=np.float32))
    np.testing.assert_array_equal(info["glimpse_boxes"][0, 0], [0, 0, 32, 32])
    np.testing.assert_array_equal(
        observation["coords"][0, :4], [[0, 0, 16, 16], [0, 16, 16, 32], [16, 0, 32, 16], [16, 16, 32, 32]]
    )
    assert observation["mask"][0, :4].sum() == 0 and observation["mask"][0, 4:].min() == 1
    assert info["pixel_fraction"][0] == pytest.approx(32 * 32 / 224**2)
    # (1, 1, -1) -> bottom-right corner 32 px at (192, 192); no overlap with the first.
    _, _, _, _, info = env.step(np.array([[1, 1, -1]], dtype=np.float32))
    np.testing.assert_array_equal(info["glimpse_boxes"][0, 1], [192, 192, 224, 224])
    assert info["pixel_fraction"][0] == pytest.approx(2 * 32 * 32 / 224**2)
    # x = +0.5 -> u = 0.75; scale 0 -> u = 0.5 -> side 128 (float 128.0): x = floor(0.75 * 96) = 72, y = 0.
    _, _, terminated, _, info = env.step(np.array([[0.5, -1, 0]], dtype=np.float32))
    np.testing.assert_array_equal(info["glimpse_boxes"][0, 2], [0, 72, 128, 200])
    covered = np.zeros((224, 224), dtype=bool)
    for y1, x1, y2, x2 in info["glimpse_boxes"][0]:
        covered[y1:y2, x1:x2] = True
    assert info["pixel_fraction"][0] == pytest.approx(covered.mean())
    assert terminated[0]


def test_next_step_autoreset(folder: Path) -> None:
    env = vector_env(folder, num_envs=2, num_glimpses=2)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    _, _, terminated, _, _ = env.step(env.action_space.sample())
    assert terminated.all()
    observation, reward, terminated, _, info = env.step(env.action_space.sample())  # the reset step
    assert np.all(reward == 0) and not terminated.any()
    assert np.all(info["num_glimpses"] == 0) and np.all(observation["mask"] == 1)


def test_same_step_autoreset(folder: Path) -> None:
    env = vector_env(folder, num_envs=2, num_glimpses=2, autoreset_mode="same_step")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    observation, _, terminated, _, info = env.step(env.action_space.sample())
    assert terminated.all()
    assert np.all(info["_final_obs"]) and np.all(info["final_obs"]["mask"][:, :8] == 0)
    assert np.all(observation["mask"] == 1)  # already the next episode's step 0
    assert np.all(info["final_info"]["num_glimpses"] == 2) and np.all(info["num_glimpses"] == 0)


def test_early_stop_desynchronises_envs_exactly(folder: Path) -> None:
    # With a threshold every score reaches, every env ends after its first glimpse.
    env = vector_env(folder, num_envs=3, num_glimpses=5, early_stop_threshold=-1e9)
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(env.action_space.sample())
    assert terminated.all() and info["early_stopped"].all()
    # A threshold no score reaches never stops early.
    env = vector_env(folder, num_envs=3, num_glimpses=2, early_stop_threshold=1e9)
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(env.action_space.sample())
    assert not terminated.any() and not info["early_stopped"].any()


def test_partial_reset_pads_exactly(folder: Path) -> None:
    # Env 1 is restarted mid-episode: the batch holds 2 glimpses beside 0, and must match a fresh env.
    env = vector_env(folder, num_envs=2, augment=False, shuffle=False, num_glimpses=4)
    env.reset(seed=0)
    action = np.array([[0.2, -0.3, 0.1], [0.5, 0.5, -1.0]], dtype=np.float32)
    env.step(action)
    env.step(action)
    env.reset(options={"reset_mask": np.array([False, True])})
    observation, _, _, _, info = env.step(action)
    assert info["num_glimpses"].tolist() == [3, 1]
    files = scan_images(folder)
    single = GlimpseEnv(
        model=tiny_model(),
        image_source=ImageSource([files[2]], transform=TransformConfig(train=False)),
        episode=EpisodeConfig(num_glimpses=4),
        shuffle=False,
    )
    single.reset(seed=0)
    single_observation, *_ = single.step(action[1])
    for key in observation:
        np.testing.assert_allclose(observation[key][1], single_observation[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (np.array([[np.nan, 0, 0]] * 2), "finite actions"),
        (np.array([[0, np.inf, 0]] * 2), "finite actions"),
        (np.zeros((2, 2)), r"shape \(2, 3\)"),
        (np.zeros((3, 3)), r"shape \(2, 3\)"),
        ([["a", "b", "c"]] * 2, "numeric actions"),
    ],
)
def test_bad_actions_raise_clear_errors(folder: Path, action, message: str) -> None:
    env = vector_env(folder, num_envs=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)


def test_out_of_range_actions_are_clipped_and_counted(folder: Path) -> None:
    env = vector_env(folder, num_envs=2)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([[5.0, -7.0, 2.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_array_equal(info["glimpse_boxes"][0, 0], [0, 0, 224, 224])  # = (1, -1, 1) clipped
    assert info["num_clipped_actions"].tolist() == [1, 0]
    _, _, _, _, info = env.step(np.array([[1.5, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float64))
    assert info["num_clipped_actions"].tolist() == [2, 0]


def test_step_before_reset_and_after_end_of_single_episode(folder: Path) -> None:
    env = vector_env(folder, num_envs=1)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros((1, 3)))
    single = GlimpseEnv(model=tiny_model(), image_source=image_folder(folder), episode=EpisodeConfig(num_glimpses=1))
    single.reset(seed=0)
    _, _, terminated, _, _ = single.step(np.zeros(3, dtype=np.float32))
    assert terminated
    with pytest.raises(RuntimeError, match="call reset"):
        single.step(np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        single.step(np.zeros(4, dtype=np.float32))


@pytest.mark.parametrize(("preset", "keys"), [("latent", {"latent", "coords", "mask"}), ("flat", None)])
def test_light_observation_presets(folder: Path, preset: str, keys) -> None:
    env = vector_env(folder, num_envs=2, observation=preset)
    observation, _ = env.reset(seed=0)
    observation, *_ = env.step(env.action_space.sample())
    assert env.observation_space.contains(observation)
    if keys:
        assert set(observation) == keys
    else:
        assert observation.shape == (2, 192 + 5 * 12)


def test_inner_layer_latent(folder: Path) -> None:
    model = tiny_model()
    source = image_folder(folder, TransformConfig(train=False))
    env = GlimpseVectorEnv(1, model, source, EpisodeConfig(num_glimpses=2, extract_latent_layer=0), shuffle=False)
    env.reset(seed=0)
    observation, *_ = env.step(np.array([[0.0, 0.0, 1.0]], dtype=np.float32))
    with torch.no_grad():
        expected = model.cls_token[0, 0] + 0  # input of block 0 for the cls token is the raw cls token
    np.testing.assert_allclose(observation["latent"][0, 0], expected.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="extract_latent_layer"):
        GlimpseVectorEnv(1, model, source, EpisodeConfig(extract_latent_layer=5))


def test_classification_and_segmentation_metrics(tmp_path: Path) -> None:
    write_images(tmp_path / "a", 2, seed=1)
    write_images(tmp_path / "b", 2, seed=2)
    env = GlimpseVectorEnv(
        2, tiny_model("classification"), image_folder(tmp_path), EpisodeConfig(task="classification", num_glimpses=2)
    )
    _, info = env.reset(seed=0)
    assert set(info["label"].tolist()) <= {0, 1}
    assert set(info["correct"].tolist()) <= {0.0, 1.0}
    probability = info["score"]
    assert np.all((probability > 0) & (probability <= 1))


def test_render_draws_boxes_where_info_says(tmp_path: Path) -> None:
    from PIL import Image

    tmp_path.mkdir(exist_ok=True)
    Image.new("RGB", (224, 224), (0, 0, 255)).save(tmp_path / "blue.png")
    env = GlimpseVectorEnv(
        1,
        tiny_model(),
        image_folder(tmp_path, TransformConfig(train=False)),
        EpisodeConfig(num_glimpses=2),
        render_mode="rgb_array",
    )
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([[-1.0, -1.0, 0.0]], dtype=np.float32))
    (frame,) = env.render()
    assert frame.shape == (224, 672, 3) and frame.dtype == np.uint8
    y1, x1, y2, x2 = info["glimpse_boxes"][0, 0]
    assert tuple(frame[y1 + (y2 - y1) // 2, x1]) != (0, 0, 255)  # left edge of the box is drawn
    assert tuple(frame[y1 + (y2 - y1) // 2, x1 + 10]) == (0, 0, 255)  # inside is the image
    assert tuple(frame[y2 + 5, x2 + 5]) == (0, 0, 255)
    seen = frame[:, 224:448]
    assert tuple(seen[y1 + 1, x1 + 1]) == (0, 0, 255)  # the seen panel shows the glimpsed pixels...
    assert tuple(seen[y2 + 5, x2 + 5]) == (128, 128, 128)  # ...on grey elsewhere


def test_odd_and_broken_images_in_the_folder(tmp_path: Path) -> None:
    from PIL import Image

    good = photo_image = Image.new("RGB", (300, 200), (10, 200, 30))
    photo_image.convert("L").save(tmp_path / "gray.png")
    photo_image.convert("P").save(tmp_path / "palette.png")
    photo_image.convert("CMYK").save(tmp_path / "cmyk.jpg")
    photo_image.convert("RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(np.full((40, 60), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    good.resize((1, 1)).save(tmp_path / "tiny.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not an image")
    data = (tmp_path / "cmyk.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
    env = GlimpseVectorEnv(4, tiny_model(), image_folder(tmp_path), EpisodeConfig(num_glimpses=1))
    with pytest.warns(RuntimeWarning, match="Skipping unreadable image"):
        for _ in range(4):  # 36 draws over 9 files: every file is met
            env.reset()
            _, _, _, _, info = env.step(env.action_space.sample())
            assert np.all(np.isfinite(info["score"]))
    assert info["num_skipped_images"][0] >= 3
    assert env.stream.skipped_files == {str(tmp_path / n) for n in ("empty.jpg", "notes.jpg", "truncated.jpg")}


def test_folder_without_readable_image_fails_at_construction(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.png").write_text("nope")
    with pytest.raises(ValueError, match="no readable image: any of its 2 files"):
        GlimpseVectorEnv(1, tiny_model(), image_folder(tmp_path), EpisodeConfig())
