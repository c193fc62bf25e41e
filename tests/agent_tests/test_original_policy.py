"""An original AdaGlimpse actor, loaded into SB3 SAC, acts like the original's deterministic mode (original
`actor_critic.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from original_layout import original_actor_shapes
from stable_baselines3 import SAC
from stable_baselines3.sac.policies import SACPolicy
from torch import nn

import adaglimpse_env
from adaglimpse_env.datasets import embedded_photos
from adaglimpse_env.envs.spaces import action_space, observation_space
from adaglimpse_env.models import create_model
from agents.features import sac_policy_kwargs
from agents.original_policy import load_original_actor, original_actor_state_dict

NUM_GLIMPSES, GRID = 8, 2
P, D = NUM_GLIMPSES * GRID * GRID, 192


def original_actor(embed_dim: int = D, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the original names; fan-in scaled so that activations stay O(1)."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, shape in original_actor_shapes(embed_dim).items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(1234)
        elif name.endswith("running_var"):
            state[name] = 0.5 + torch.rand(shape, generator=generator)
        elif len(shape) > 1:
            fan_in = int(np.prod(shape[1:]))
            state[name] = torch.randn(shape, generator=generator) / fan_in**0.5
        elif name.endswith("weight"):  # LayerNorm / BatchNorm scales
            state[name] = 1.0 + 0.2 * torch.randn(shape, generator=generator)
        else:
            state[name] = 0.2 * torch.randn(shape, generator=generator)
    return state


def lightning_checkpoint(actor: dict[str, torch.Tensor], **hyper_parameters: Any) -> dict[str, Any]:
    """The original Lightning checkpoints layout: the actor twice, plus MAE and critic entries that must be ignored."""
    state_dict: dict[str, torch.Tensor] = {"mae._orig_mod.cls_token": torch.zeros(1, 1, D)}
    state_dict |= {f"actor_critic.actor_net.{k}": v for k, v in actor.items()}
    state_dict |= {f"actor_critic.policy_module.module.0.module.{k}": v.clone() for k, v in actor.items()}
    state_dict["actor_critic.qvalue_net.head.2.weight"] = torch.zeros(1, 256)
    state_dict["rl_loss_module.log_alpha"] = torch.zeros(())
    return {"state_dict": state_dict, "hyper_parameters": hyper_parameters, "epoch": 3, "global_step": 10}


def manual_original_action(state: dict[str, torch.Tensor], obs: dict[str, np.ndarray]) -> np.ndarray:
    """The original actor's deterministic mode, by hand, converted to our (x, y, scale) in [-1, 1]."""
    t = {key: torch.as_tensor(value)[None] for key, value in obs.items()}
    slots = t["mask"].shape[1]

    def linear(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, state[f"{name}.weight"], state[f"{name}.bias"])

    def embed(x: torch.Tensor, name: str) -> torch.Tensor:  # Linear, LayerNorm(eps=1e-6), GELU
        x = linear(x, f"{name}.0")
        x = F.layer_norm(x, x.shape[-1:], state[f"{name}.1.weight"], state[f"{name}.1.bias"], eps=1e-6)
        return F.gelu(x)

    def conv_block(x: torch.Tensor, conv: int, bn: int) -> torch.Tensor:
        x = F.conv2d(x, state[f"patch_net_conv.{conv}.weight"], state[f"patch_net_conv.{conv}.bias"])
        p = f"patch_net_conv.{bn}"
        x = F.batch_norm(
            x, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"], state[f"{p}.bias"]
        )
        return F.max_pool2d(F.gelu(x), 2)

    patches = t["patches"].reshape(slots, 3, 16, 16)
    patch_features = conv_block(conv_block(patches, 0, 1), 4, 5).reshape(1, slots, 32)
    streams = [patch_features, t["importance"], t["coords"], t["latent"][:, 1:]]  # cls dropped
    x = torch.cat([embed(s, f"input_layers.{i}") for i, s in enumerate(streams)], dim=-1)[0]  # (P, 512)

    h = embed(x, "pooling.input_layer")  # (P, 256)
    logits = linear(F.gelu(linear(h, "pooling.attention.0")), "pooling.attention.2")  # (P, 8)
    pooled = []
    for head in range(8):
        weights = torch.softmax(logits[:, head] + t["mask"][0, :, 0] * -1e8, dim=0)  # (P,)
        pooled.append((weights[:, None] * h[:, 32 * head : 32 * (head + 1)]).sum(dim=0))
    features = embed(torch.cat(pooled), "pooling.output_layer")  # (256,)

    out = linear(F.gelu(linear(features, "head.0")), "head.2")  # (6,)
    unit_yxs = 0.5 + 0.5 * torch.tanh(out[:3] + 0.5)  # torchrl TanhNormal(min=0, max=1) mode
    unit_xys = unit_yxs[[1, 0, 2]]
    return (2.0 * unit_xys - 1.0).numpy()


@pytest.fixture(scope="module")
def env() -> Iterator[adaglimpse_env.GlimpseEnv]:
    torch.manual_seed(0)
    environment = adaglimpse_env.GlimpseEnv(
        model=create_model("tiny", "reconstruction", depth=1, decoder_depth=1),
        image_source=embedded_photos("val"),
        episode=adaglimpse_env.EpisodeConfig(num_glimpses=NUM_GLIMPSES),
    )
    yield environment
    environment.close()


def test_loaded_policy_acts_like_the_original_deterministic_mode(env: Any, tmp_path: Path) -> None:
    actor = original_actor()
    path = tmp_path / "adaglimpse.ckpt"
    torch.save(lightning_checkpoint(actor, num_glimpses=NUM_GLIMPSES, glimpse_grid_size=GRID), path)
    model = SAC("MultiInputPolicy", env, policy_kwargs=sac_policy_kwargs(), buffer_size=8, device="cpu", seed=0)
    load_original_actor(model.policy, path)

    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    compared = 0
    for step in range(NUM_GLIMPSES):
        if step in (0, 1, 3, NUM_GLIMPSES - 1):
            action, _ = model.predict(obs, deterministic=True)
            np.testing.assert_allclose(action, manual_original_action(actor, obs), atol=1e-5, rtol=0)
            compared += 1
        obs, *_ = env.step(rng.uniform(-1, 1, 3).astype(np.float32))
    assert compared == 4

    # Sampled actions use the raw scale rows (reordered) as log_std: documented approximation.
    order = [1, 0, 2]
    loaded = model.policy.actor.state_dict()
    torch.testing.assert_close(loaded["log_std.weight"], actor["head.2.weight"][3:][order])
    torch.testing.assert_close(loaded["log_std.bias"], actor["head.2.bias"][3:][order])
    assert loaded["features_extractor.patch_net_conv.1.num_batches_tracked"].item() == 1234


@pytest.fixture(scope="module")
def policy() -> SACPolicy:
    return SACPolicy(observation_space("full", P, D, (224, 224)), action_space(), lambda _: 1e-3, **sac_policy_kwargs())


def test_bare_actor_state_dict_loads_too(policy: SACPolicy) -> None:
    actor = original_actor(seed=1)
    load_original_actor(policy, actor)
    loaded = policy.actor.state_dict()
    torch.testing.assert_close(loaded["latent_pi.0.weight"], actor["head.0.weight"])
    torch.testing.assert_close(loaded["mu.weight"], actor["head.2.weight"][:3][[1, 0, 2]])
    torch.testing.assert_close(loaded["mu.bias"], (actor["head.2.bias"][:3] + 0.5)[[1, 0, 2]])


def test_original_actor_state_dict_strips_the_prefix_and_ignores_duplicates() -> None:
    actor = original_actor()
    extracted = original_actor_state_dict(lightning_checkpoint(actor))
    assert set(extracted) == set(actor)
    assert all(extracted[k] is actor[k] for k in actor)
    assert original_actor_state_dict(lightning_checkpoint(actor)["state_dict"]).keys() == actor.keys()
    assert original_actor_state_dict(actor).keys() == actor.keys()
    with pytest.raises(ValueError, match=r"actor_critic\.actor_net\."):
        original_actor_state_dict({"state_dict": {"mae._orig_mod.cls_token": torch.zeros(1)}})


def test_checkpoint_for_another_embed_dim_is_rejected(policy: SACPolicy) -> None:
    with pytest.raises(ValueError, match=r"input_layers\.3\.0\.weight: expected \(128, 192\), got \(128, 384\)"):
        load_original_actor(policy, lightning_checkpoint(original_actor(embed_dim=384)))


def test_missing_and_unexpected_keys_are_named(policy: SACPolicy) -> None:
    actor = original_actor()
    del actor["head.2.bias"]
    actor["head.4.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"missing: head\.2\.bias") as error:
        load_original_actor(policy, actor)
    assert "unexpected: head.4.weight" in str(error.value)


def test_checkpoint_for_another_glimpse_budget_is_rejected(policy: SACPolicy) -> None:
    checkpoint = lightning_checkpoint(original_actor(), num_glimpses=14, glimpse_grid_size=2)
    with pytest.raises(ValueError, match=r"P=56 token slots.*P=32"):
        load_original_actor(policy, checkpoint)


def test_policy_without_the_original_head_is_rejected() -> None:
    kwargs = sac_policy_kwargs() | {"activation_fn": nn.ReLU}
    policy = SACPolicy(observation_space("full", P, D, (224, 224)), action_space(), lambda _: 1e-3, **kwargs)
    with pytest.raises(ValueError, match="original actor head"):
        load_original_actor(policy, original_actor())


def test_original_policy_on_a_vector_env_reads_its_single_spaces(env: Any, tmp_path: Path) -> None:
    # evaluate.py / visualize_episode.py load `original:<ckpt>` for a GlimpseVectorEnv, whose observation_space is
    # batched: the policy must be built on single_observation_space and act like the original on each env.
    from agents.original_policy import load_original_policy
    from agents.policies import load_policy

    actor = original_actor(seed=1)
    path = tmp_path / "adaglimpse.ckpt"
    torch.save(lightning_checkpoint(actor, num_glimpses=NUM_GLIMPSES, glimpse_grid_size=GRID), path)
    vector_env = env.vector_env  # num_envs=1: batched spaces differ from the single ones by a leading 1
    policy = load_original_policy(path, vector_env)
    assert policy.observation_space == vector_env.single_observation_space
    observation, _ = vector_env.reset(seed=0)
    observation, *_ = vector_env.step(np.zeros((1, 3), dtype=np.float32))
    for loaded in (policy, load_policy(f"original:{path}", vector_env)):
        action, _ = loaded.predict(observation, deterministic=True)
        assert action.shape == (1, 3)
        first = {key: value[0] for key, value in observation.items()}
        np.testing.assert_allclose(action[0], manual_original_action(actor, first), atol=1e-5, rtol=0)
