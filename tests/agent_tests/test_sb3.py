"""SB3 algorithms end to end on a tiny glimpse env through the native-vector-env adapter."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, TD3
from stable_baselines3.common.vec_env import VecMonitor

from adaglimpse_env.models import ElasticMAE, load_model
from agents.features import GlimpseFeaturesExtractor
from agents.map_features import GlimpseMapExtractor
from agents.replay import Float16DictReplayBuffer, Float16ReplayBuffer, replay_buffer_bytes
from agents.sac import PAPER_SAC, make_sac, one_cycle_cosine
from agents.sb3_adapter import GlimpseSB3VecEnv, make_sb3_vec_env


def tiny_vec_env(
    folder: Path, checkpoint: Path | ElasticMAE, num_envs: int = 2, glimpses: int = 2, observation: str = "full"
) -> GlimpseSB3VecEnv:
    return make_sb3_vec_env(
        "AdaGlimpse-ImageFolder-v0",
        num_envs=num_envs,
        data_root=str(folder),
        checkpoint=checkpoint,
        num_glimpses=glimpses,
        observation=observation,
    )


def test_adapter_episode_bookkeeping(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    env = tiny_vec_env(tiny_folder, tiny_checkpoint, glimpses=2)
    env.seed(3)
    first = env.reset()
    assert first["mask"].shape == (2, 8, 1) and np.all(first["mask"] == 1)
    env.step_async(np.zeros((2, 3), dtype=np.float32))
    _, _, dones, infos = env.step_wait()
    assert not dones.any() and "terminal_observation" not in infos[0]
    env.step_async(np.zeros((2, 3), dtype=np.float32))
    observation, rewards, dones, infos = env.step_wait()
    assert dones.all() and rewards.shape == (2,)
    for info in infos:
        assert info["TimeLimit.truncated"] is False
        assert info["num_glimpses"] == 2  # the metrics of the episode that ended
        assert np.all(info["terminal_observation"]["mask"] == 0)
    assert np.all(observation["mask"] == 1)  # the next episode already started
    env.seed(3)
    np.testing.assert_array_equal(env.reset()["latent"], first["latent"])  # seeding reproduces the images
    assert env.get_attr("num_envs") == [2, 2] and env.env_is_wrapped(gym.Wrapper) == [False, False]
    env.close()


def test_adapter_requires_same_step_autoreset(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    vector = gym.make_vec(
        "AdaGlimpse-ImageFolder-v0", num_envs=1, data_root=str(tiny_folder), checkpoint=str(tiny_checkpoint)
    )
    with pytest.raises(ValueError, match="autoreset_mode='same_step'"):
        GlimpseSB3VecEnv(vector)


def test_sac_runs_with_paper_settings(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    env = VecMonitor(tiny_vec_env(tiny_folder, tiny_checkpoint))
    model = make_sac(env, seed=0, device="cpu", learning_starts=8, buffer_size=64, batch_size=8)
    assert isinstance(model.replay_buffer, Float16DictReplayBuffer)
    assert model.gamma == PAPER_SAC["gamma"] and model.tau == PAPER_SAC["tau"] and model.target_entropy == -3.0
    assert model.actor.features_extractor is not model.critic.features_extractor  # separate trunks
    model.learn(24)
    assert model.num_timesteps == 24 and model.replay_buffer.size() > 0
    samples = model.replay_buffer.sample(4)
    assert samples.observations["latent"].dtype == torch.float32
    actions, _ = model.predict(env.reset(), deterministic=True)
    assert actions.shape == (2, 3) and np.all(np.abs(actions) <= 1)


@pytest.mark.parametrize("observation", ["latent", "flat", "map"])
def test_make_sac_fits_every_observation_preset(tiny_folder: Path, tiny_checkpoint: Path, observation: str) -> None:
    env = tiny_vec_env(tiny_folder, tiny_checkpoint, observation=observation)
    model = make_sac(env, seed=0, device="cpu", learning_starts=4, buffer_size=32, batch_size=4)
    if observation == "latent":  # the original trunk over the streams the preset holds
        assert isinstance(model.actor.features_extractor, GlimpseFeaturesExtractor)
        assert model.actor.features_extractor.streams == ("coords", "latent")
    elif observation == "map":  # a picture: the small CNN, float16 replay
        assert isinstance(model.actor.features_extractor, GlimpseMapExtractor)
        assert isinstance(model.replay_buffer, Float16ReplayBuffer)
    else:  # one vector: SB3's MLP
        assert not isinstance(model.actor.features_extractor, GlimpseFeaturesExtractor)
    model.learn(8)
    assert model.num_timesteps == 8
    env.close()


@pytest.mark.parametrize("algorithm", [TD3, PPO])
def test_other_algorithms_run_through_the_adapter(tiny_folder: Path, tiny_checkpoint: Path, algorithm) -> None:
    env = tiny_vec_env(tiny_folder, tiny_checkpoint)
    kwargs = {"features_extractor_class": GlimpseFeaturesExtractor}
    if algorithm is TD3:
        model = TD3(
            "MultiInputPolicy", env, policy_kwargs=kwargs, learning_starts=8, buffer_size=64, batch_size=8, seed=0
        )
    else:
        model = PPO("MultiInputPolicy", env, policy_kwargs=kwargs, n_steps=4, batch_size=8, n_epochs=1, seed=0)
    model.learn(16)
    assert model.num_timesteps >= 16


def test_float16_buffer_halves_memory_and_keeps_values(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    env = tiny_vec_env(tiny_folder, tiny_checkpoint)
    space = env.observation_space
    assert replay_buffer_bytes(1000, space, np.float16) * 2 == replay_buffer_bytes(1000, space, np.float32)
    buffer = Float16DictReplayBuffer(16, space, env.action_space, n_envs=2)
    assert buffer.observations["patches"].dtype == np.float16
    observation = env.reset()
    observation["coords"][:] = 223.0  # box coordinates stay exact in float16
    buffer.add(observation, observation, np.zeros((2, 3)), np.zeros(2), np.zeros(2), [{}, {}])
    sample = buffer.sample(2)
    assert torch.all(sample.observations["coords"] == 223.0)
    np.testing.assert_allclose(sample.observations["latent"][0].numpy(), observation["latent"][0], rtol=1e-3, atol=1e-3)


def test_one_cycle_cosine_schedule() -> None:
    schedule = one_cycle_cosine(1e-3)
    assert schedule(1.0) == 1e-3 and schedule(0.995) == 1e-3  # flat for the first 1%
    assert schedule(0.0) == pytest.approx(1e-6)
    assert schedule(0.495) == pytest.approx(0.5 * (1e-3 + 1e-6), rel=1e-3)


def test_tiny_checkpoint_fixture_loads(tiny_checkpoint: Path) -> None:
    assert load_model(tiny_checkpoint).task == "reconstruction"


def test_reset_passes_the_options_set_by_set_options() -> None:
    # SB3's VecEnv.set_options() stores options for the next reset; the adapter used to drop them.
    from types import SimpleNamespace

    from gymnasium.vector import AutoresetMode

    from adaglimpse_env.envs.spaces import action_space, observation_space
    from agents.sb3_adapter import GlimpseSB3VecEnv

    calls: list[dict] = []
    space = observation_space("flat", 4, 8, (32, 32))

    def reset(seed: int | None = None, options: dict | None = None) -> tuple:
        calls.append({"seed": seed, "options": options})
        return np.zeros((2, *space.shape)), {"score": np.zeros(2)}

    fake = SimpleNamespace(
        autoreset_mode=AutoresetMode.SAME_STEP,
        num_envs=2,
        render_mode=None,
        single_observation_space=space,
        single_action_space=action_space(),
        reset=reset,
    )
    venv = GlimpseSB3VecEnv(fake)  # type: ignore[arg-type]
    mask = np.array([True, False])
    venv.set_options({"reset_mask": mask})
    venv.reset()
    assert calls[-1]["options"] is not None and calls[-1]["options"]["reset_mask"].tolist() == [True, False]
    venv.reset()  # options apply to one reset, as SB3's own VecEnvs
    assert calls[-1]["options"] is None
    venv.set_options([{"reset_mask": mask}, {"reset_mask": ~mask}])
    with pytest.raises(ValueError, match="same options for every env"):
        venv.reset()
