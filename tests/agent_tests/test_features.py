"""The SB3 trunk mirrors the original actor/critic trunk: shapes, masking, names and sizes (original
`actor_critic.py`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from original_layout import original_actor_shapes
from stable_baselines3.sac.policies import SACPolicy
from torch import nn

from adaglimpse_env.envs.spaces import action_space, observation_space
from agents.features import GlimpseFeaturesExtractor, sac_policy_kwargs

P, D = 32, 192


def full_space(num_tokens: int = P, embed_dim: int = D) -> spaces.Dict:
    space = observation_space("full", num_tokens, embed_dim, (224, 224))
    assert isinstance(space, spaces.Dict)
    return space


def batch(space: spaces.Dict, filled: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Samples of ``space`` with the first ``filled[b]`` slots of env ``b`` holding tokens, the rest empty."""
    space.seed(seed)
    samples = [space.sample() for _ in filled]
    obs = {key: torch.as_tensor(np.stack([s[key] for s in samples])) for key in space.spaces}
    slots = obs["mask"].shape[1]
    obs["mask"] = (torch.arange(slots)[None] >= torch.tensor(filled)[:, None]).float()[..., None]
    return obs


def perturb_empty(obs: dict[str, torch.Tensor], keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """A copy with new random values in the empty slots of ``keys`` (and in the cls token of the latent)."""
    generator = torch.Generator().manual_seed(1)
    empty = obs["mask"][..., 0].bool()  # (B, P)
    out = {key: value.clone() for key, value in obs.items()}
    for key in keys:
        value = out[key][:, 1:] if key == "latent" else out[key]  # latent slot i is token i + 1
        noise = 3.0 * torch.randn(value.shape, generator=generator)
        value[empty] = noise[empty]
        if key == "latent":
            out[key][:, 0] = torch.randn(out[key][:, 0].shape, generator=generator)
    return out


def test_output_shape_and_features_dim() -> None:
    space = full_space()
    extractor = GlimpseFeaturesExtractor(space)
    assert extractor.features_dim == 256
    assert (extractor.num_tokens, extractor.embed_dim, extractor.common_dim) == (P, D, 128)
    features = extractor(batch(space, [0, 4, 17, 32]))
    assert features.shape == (4, 256)
    assert torch.isfinite(features).all()


def test_empty_slots_do_not_change_the_output_in_eval_mode() -> None:
    space = full_space()
    torch.manual_seed(0)
    extractor = GlimpseFeaturesExtractor(space).eval()
    obs = batch(space, [1, 4, 17, 31])
    reference = extractor(obs)
    perturbed = perturb_empty(obs, ("latent", "coords", "importance", "patches"))
    assert not torch.equal(perturbed["latent"], obs["latent"])
    torch.testing.assert_close(extractor(perturbed), reference, atol=1e-6, rtol=0)


def test_empty_patches_move_batchnorm_statistics_in_train_mode() -> None:
    # The original's `actor_critic.py`: the patch CNN's BatchNorm sees every slot, empty ones included (the original's
    # quirk).
    space = full_space()
    torch.manual_seed(0)
    extractor = GlimpseFeaturesExtractor(space).train()
    obs = batch(space, [1, 4, 17, 31])
    perturbed = perturb_empty(obs, ("patches",))
    assert not torch.allclose(extractor(perturbed), extractor(obs), atol=1e-6)
    # While latent, coords and importance of empty slots stay invisible even in train mode.
    others = perturb_empty(obs, ("latent", "coords", "importance"))
    torch.testing.assert_close(extractor(others), extractor(obs), atol=1e-6, rtol=0)


def test_parameter_names_and_shapes_match_the_original_trunk() -> None:
    # The original's `actor_critic.py`, ActorNet without its head, D = 192.
    expected = {k: v for k, v in original_actor_shapes(192).items() if not k.startswith("head.")}
    buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    expected_parameters = {k: v for k, v in expected.items() if not k.endswith(buffer_names)}
    expected_buffers = {k: v for k, v in expected.items() if k.endswith(buffer_names)}
    assert len(expected_buffers) == 6
    extractor = GlimpseFeaturesExtractor(full_space())
    assert {k: tuple(v.shape) for k, v in extractor.named_parameters()} == expected_parameters
    assert {k: tuple(v.shape) for k, v in extractor.state_dict().items()} == expected_parameters | expected_buffers
    assert isinstance(extractor.get_submodule("patch_net_conv.1"), nn.BatchNorm2d)
    assert all(extractor.get_submodule(f"input_layers.{i}.1").eps == 1e-6 for i in range(4))


def test_sac_actor_has_the_original_actor_parameter_count() -> None:
    # The original's `actor_critic.py`: with D = 384 the original actor has 395,870 parameters; its head.2 (6, 256) is
    # our mu + log_std.
    policy = SACPolicy(full_space(P, 384), action_space(), lambda _: 1e-3, **sac_policy_kwargs())
    actor = policy.actor
    assert isinstance(actor.features_extractor, GlimpseFeaturesExtractor)
    state = actor.state_dict()
    head = ("latent_pi.0", "mu", "log_std")
    assert [tuple(state[f"{name}.weight"].shape) for name in head] == [(256, 256), (3, 256), (3, 256)]
    assert [type(m) for m in actor.latent_pi] == [nn.Linear, nn.GELU]
    count = sum(p.numel() for p in actor.features_extractor.parameters())
    count += sum(p.numel() for name in head for p in actor.get_submodule(name).parameters())
    assert count == 395_870
    # Separate trunks for the actor and each critic, as in the original.
    assert policy.critic.features_extractor is not actor.features_extractor


def test_exclude_inputs_changes_common_dim() -> None:
    extractor = GlimpseFeaturesExtractor(full_space(), exclude_inputs=("coords",))
    assert extractor.streams == ("patches", "importance", "latent")
    assert extractor.common_dim == 2 * 256 // 3
    state = extractor.state_dict()
    assert state["pooling.input_layer.0.weight"].shape == (256, 3 * 170)
    assert state["input_layers.2.0.weight"].shape == (170, D)
    assert extractor(batch(full_space(), [3, 8])).shape == (2, 256)


def test_latent_preset_works_without_patches_and_importance() -> None:
    space = observation_space("latent", P, D, (224, 224))
    extractor = GlimpseFeaturesExtractor(space, exclude_inputs=("patches", "importance"))
    assert not hasattr(extractor, "patch_net_conv")
    obs = {key: torch.as_tensor(np.stack([space.sample()[key]] * 2)) for key in ("latent", "coords", "mask")}
    assert extractor(obs).shape == (2, 256)


def test_rejects_observation_spaces_that_are_not_the_full_preset() -> None:
    with pytest.raises(ValueError, match="Dict observation space"):
        GlimpseFeaturesExtractor(observation_space("flat", P, D, (224, 224)))
    with pytest.raises(ValueError, match=r"missing \['patches', 'importance'\]"):
        GlimpseFeaturesExtractor(observation_space("latent", P, D, (224, 224)))
    wrong = spaces.Dict({**full_space().spaces, "coords": spaces.Box(0, 224, (P, 2), np.float32)})
    with pytest.raises(ValueError, match=r"coords: expected \(32, 4\), got \(32, 2\)"):
        GlimpseFeaturesExtractor(wrong)
    with pytest.raises(ValueError, match="unknown"):
        GlimpseFeaturesExtractor(full_space(), exclude_inputs=("attention",))
