"""GlimpseSAC's cheaper update is SB3's SAC update: same losses, parameters and BatchNorm statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure

from agents.sac import GlimpseSAC, make_sac
from agents.sb3_adapter import GlimpseSB3VecEnv, make_sb3_vec_env


def _env(folder: Path, checkpoint: Path, observation: str, num_envs: int = 2) -> GlimpseSB3VecEnv:
    """A 3-glimpse env over the tiny folder and model."""
    return make_sb3_vec_env(
        "AdaGlimpse-ImageFolder-v0", num_envs=num_envs, data_root=str(folder), checkpoint=checkpoint,
        num_glimpses=3, observation=observation,
    )  # fmt: skip


def _filled_model(folder: Path, checkpoint: Path, observation: str) -> GlimpseSAC:
    env = _env(folder, checkpoint, observation)
    model = make_sac(env, seed=0, device="cpu", learning_starts=40, buffer_size=64, batch_size=8)
    model.learn(40)  # warm-up only: the buffer holds 40 random transitions, no update yet
    model.set_logger(configure(None, []))
    return model


def _state(model: SAC) -> dict[str, torch.Tensor]:
    tensors = {f"policy.{k}": v.clone() for k, v in model.policy.state_dict().items()}
    tensors["log_ent_coef"] = model.log_ent_coef.detach().clone()
    return tensors


@pytest.mark.parametrize("observation", ["full", "latent", "flat", "map"])
def test_glimpse_sac_update_equals_sb3(tiny_folder: Path, tiny_checkpoint: Path, observation: str) -> None:
    model = _filled_model(tiny_folder, tiny_checkpoint, observation)
    model.where_loss_weight = 0.0  # the map's extra actor loss is not SB3's (tested in test_map_critic.py)
    start = {k: v.clone() for k, v in _state(model).items()}
    optimisers = [model.actor.optimizer.state_dict(), model.critic.optimizer.state_dict()]

    torch.manual_seed(7)
    np.random.seed(7)  # SB3's replay buffer samples with NumPy's global generator
    SAC.train(model, gradient_steps=3, batch_size=8)
    sb3_state = _state(model)
    sb3_logged = dict(model.logger.name_to_value)

    # Back to the start: parameters, BatchNorm statistics, optimiser moments, entropy coefficient.
    model.policy.load_state_dict({k[len("policy.") :]: v for k, v in start.items() if k.startswith("policy.")})
    model.actor.optimizer.load_state_dict(optimisers[0])
    model.critic.optimizer.load_state_dict(optimisers[1])
    with torch.no_grad():
        model.log_ent_coef.copy_(start["log_ent_coef"])
    model.ent_coef_optimizer = torch.optim.Adam([model.log_ent_coef], lr=model.lr_schedule(1))
    model._n_updates = 0
    # SB3 built its entropy optimiser at the same learning rate; rebuilding it resets its moments as at the start.
    torch.manual_seed(7)
    np.random.seed(7)  # SB3's replay buffer samples with NumPy's global generator
    GlimpseSAC.train(model, gradient_steps=3, batch_size=8)
    ours = _state(model)

    assert sb3_state.keys() == ours.keys()
    for key in sb3_state:
        torch.testing.assert_close(ours[key], sb3_state[key], rtol=0, atol=0, msg=key)
    for key in ("train/actor_loss", "train/critic_loss", "train/ent_coef"):
        assert model.logger.name_to_value[key] == sb3_logged[key]


def test_warmup_policy_acts_in_its_share_of_the_envs(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    from agents.baselines import WholeImageFirstPolicy

    env = _env(tiny_folder, tiny_checkpoint, "flat", num_envs=4)
    model = make_sac(env, seed=0, device="cpu", learning_starts=8, buffer_size=64, batch_size=8)
    model.warmup_policy = WholeImageFirstPolicy(3, 4, 64, 32, 64.0)
    model.warmup_share = 0.5
    model.learn(8)  # two vector steps, both in the warm-up
    actions = model.replay_buffer.actions[:2]  # (steps, envs, 3)
    np.testing.assert_array_equal(actions[0, :2], [[0.0, 0.0, 1.0]] * 2)  # guided envs: the whole image first
    assert not np.allclose(actions[0, 2:], [0.0, 0.0, 1.0])  # the others: uniform random
    assert not np.allclose(actions[1, :2], actions[0, :2])  # then the guided envs follow the policy's raster


def test_a_run_with_a_warmup_policy_saves_a_safely_loadable_zip(
    tiny_folder: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    # The warm-up policy is a live object (it holds an env): it is not saved, so the zip has nothing pickled.
    from agents.baselines import WholeImageFirstPolicy
    from agents.sb3_files import load_sb3

    env = _env(tiny_folder, tiny_checkpoint, "flat")
    model = make_sac(env, seed=0, device="cpu", learning_starts=8, buffer_size=64, batch_size=8)
    model.warmup_policy = WholeImageFirstPolicy(3, 2, 64, 32, 64.0)
    model.learn(4)
    model.save(tmp_path / "guided.zip")
    loaded = load_sb3(GlimpseSAC, tmp_path / "guided.zip", env.observation_space, env.action_space)
    assert loaded.warmup_policy is None and loaded.num_timesteps == 4
