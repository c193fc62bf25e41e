"""GridDQN: DQN's update at the cost of the glimpses it reads (agents/grid_dqn_learner.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gymnasium import spaces
from map_env import tiny_map_env
from stable_baselines3 import DQN
from stable_baselines3.common.logger import configure

from agents.critic_search import glimpse_candidates, scale_axis
from agents.grid_dqn import GlimpseGridQPolicy, GridActions
from agents.grid_dqn_learner import GridDQN, sub_grid_indices, symmetry_permutations
from agents.grid_policy import GlimpseGrid, GlimpseGridExtractor
from agents.map_critic import GlimpseGeometry
from agents.symmetry import apply_symmetries, apply_to_actions

GEOMETRY = GlimpseGeometry(image_size=(224, 224), min_crop=32.0, max_crop=224.0)


def test_the_target_grid_is_every_other_point_of_the_action_grid() -> None:
    grid = GlimpseGrid()  # 13 x 13 x 5, geometric zoom levels
    indices = sub_grid_indices(grid, 7, 3)
    assert indices.shape == (147,) and len(set(indices.tolist())) == 147
    coarse = glimpse_candidates(7, 3, torch.zeros(()), scale_axis(GEOMETRY, 3, "geometric", torch.zeros(())))
    torch.testing.assert_close(grid.candidates(GEOMETRY)[indices], coarse)
    assert sub_grid_indices(grid, 13, 5).tolist() == list(range(grid.size))
    assert sub_grid_indices(grid, 1, 1).tolist() == [(6 * 13 + 6) * 5 + 2]  # the centre, the middle zoom level
    with pytest.raises(ValueError, match=r"1 <= target_positions <= 13"):
        sub_grid_indices(grid, 14, 3)


def test_symmetries_move_each_glimpse_to_the_grid_point_of_its_image() -> None:
    candidates = GlimpseGrid(positions=5, scales=3).candidates(GEOMETRY)
    table = symmetry_permutations(candidates)
    assert table.shape == (8, len(candidates))
    assert table[0].tolist() == list(range(len(candidates)))  # code 0: no symmetry
    for code, permutation in enumerate(table):
        assert sorted(permutation.tolist()) == list(range(len(candidates)))
        draws = torch.tensor([code // 4, code // 2 % 2, code % 2], dtype=torch.bool).expand(len(candidates), -1)
        torch.testing.assert_close(candidates[permutation], apply_to_actions(candidates, draws))
    # Mirror x (code 2) moves the top-left small glimpse to the top-right one.
    assert candidates[table[2, 0]].tolist() == pytest.approx([1.0, -1.0, -1.0])


def test_scoring_some_candidates_gives_their_columns_of_the_full_scoring() -> None:
    extractor = GlimpseGridExtractor(
        _map_space(16), GEOMETRY.__dict__, GlimpseGrid(positions=5, scales=3).to_dict(), summary_dim=8, channels=4
    )
    maps = torch.rand(3, 5, 16, 16)
    with torch.no_grad():
        every = extractor(maps)[:, :75]  # (B, K) scores, then the summary
        per_map = torch.tensor([[0, 74], [3, 3], [40, 7]])
        torch.testing.assert_close(extractor.candidate_scores(maps, per_map), every.gather(1, per_map))
        shared = torch.tensor([5, 6, 70])
        torch.testing.assert_close(extractor.candidate_scores(maps, shared), every[:, shared])


def test_with_the_full_target_grid_and_no_augmentation_it_takes_sb3_dqns_step(
    tiny_folder: Path, tiny_checkpoint: Path
) -> None:
    """The same replayed batches give the same parameters as SB3's DQN.train: only the cost differs."""
    grid = GlimpseGrid(positions=3, scales=2)
    models = []
    for algorithm, extra in (
        (DQN, {}),
        (GridDQN, {"target_positions": 3, "target_scales": 2, "symmetry_augment": False}),
    ):
        env = GridActions(tiny_map_env(tiny_folder, tiny_checkpoint), grid)
        model = algorithm(GlimpseGridQPolicy, env, learning_starts=8, buffer_size=64, batch_size=8, train_freq=1,
                          gradient_steps=1, target_update_interval=4, learning_rate=1e-2,
                          policy_kwargs=env.policy_kwargs(), seed=0, device="cpu", **extra)  # fmt: skip
        model.learn(24)
        models.append(model)
        env.close()
    reference, grid_dqn = models
    assert grid_dqn._n_updates == reference._n_updates > 0
    for ours, theirs in zip(grid_dqn.policy.parameters(), reference.policy.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_a_saved_grid_dqn_loads_as_sb3_dqn_and_acts_the_same(
    tiny_folder: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    env = GridActions(tiny_map_env(tiny_folder, tiny_checkpoint), GlimpseGrid(positions=3, scales=2))
    model = GridDQN(GlimpseGridQPolicy, env, learning_starts=4, buffer_size=64, batch_size=8, train_freq=1,
                    gradient_steps=1, target_positions=2, target_scales=1, policy_kwargs=env.policy_kwargs(), seed=0,
                    device="cpu")  # fmt: skip
    model.learn(16)
    model.save(tmp_path / "grid_dqn.zip")
    from agents.sb3_files import load_sb3, read_sb3_data

    data = read_sb3_data(tmp_path / "grid_dqn.zip")
    assert data["target_positions"] == 2 and not {"_permutations", "_target_indices"} & set(data)
    reloaded = GridDQN.load(tmp_path / "grid_dqn.zip", env=env, device="cpu")
    assert reloaded._target_indices.tolist() == sub_grid_indices(GlimpseGrid(positions=3, scales=2), 2, 1).tolist()
    reloaded.set_logger(configure(None, []))
    reloaded.replay_buffer = model.replay_buffer  # the zip holds no buffer
    reloaded.train(1, 8)  # the rebuilt tables serve an update
    loaded = load_sb3(DQN, tmp_path / "grid_dqn.zip", env.observation_space, env.action_space)  # no unpickling
    observation = env.reset()
    np.testing.assert_array_equal(
        loaded.predict(observation, deterministic=True)[0], model.predict(observation, deterministic=True)[0]
    )
    with pytest.raises(ValueError, match="target grid of 4 places"):
        GridDQN(GlimpseGridQPolicy, env, target_positions=4, policy_kwargs=env.policy_kwargs(), device="cpu")
    env.close()


def _map_space(side: int) -> spaces.Box:
    return spaces.Box(-3.0, 3.0, shape=(5, side, side), dtype=np.float32)


def test_the_benchmark_entry_is_grid_dqn_with_the_settings_of_its_table(
    tiny_folder: Path, tiny_checkpoint: Path
) -> None:
    """docs/results.md's dqn_grid rows were trained with these settings given as overrides; they are the defaults
    now, so the table's command without them repeats the rows."""
    from agents.algorithms import build_algorithm

    env = tiny_map_env(tiny_folder, tiny_checkpoint)
    model = build_algorithm("dqn_grid", env, 0, "cpu", {"buffer_size": 64})
    assert isinstance(model, GridDQN) and model.symmetry_augment
    assert (model.learning_rate, model.tau, model.target_update_interval) == (1e-3, 0.02, 16)
    assert (model.exploration_fraction, model.exploration_final_eps, model.gradient_steps) == (0.1, 0.1, 4)
    assert model.boltzmann_sharpness == 6.0
    extractor = model.q_net.features_extractor
    assert isinstance(extractor, GlimpseGridExtractor) and extractor.grid == GlimpseGrid()
    assert extractor.score_features.out_channels == 32
    assert [layer.out_features for layer in extractor.score if isinstance(layer, torch.nn.Linear)] == [128, 128, 1]
    # An override of one extractor setting keeps the others' defaults.
    override = {"features_extractor_kwargs": {"summary_dim": 32}}
    narrower = build_algorithm("dqn_grid", env, 0, "cpu", {"buffer_size": 64, "policy_kwargs": override})
    narrower_extractor = narrower.q_net.features_extractor  # type: ignore[attr-defined]
    assert narrower_extractor.summary_dim == 32 and narrower_extractor.score_features.out_channels == 32
    # A Q-network whose values are not the scorer's outputs is refused.
    extractor_kwargs = {"glimpse_geometry": GEOMETRY.__dict__, "grid": GlimpseGrid().to_dict()}
    policy_kwargs = {"features_extractor_class": GlimpseGridExtractor, "features_extractor_kwargs": extractor_kwargs}
    with pytest.raises(ValueError, match="GridDQN trains a GlimpseGridQPolicy"):
        GridDQN("MlpPolicy", GridActions(env), buffer_size=64, policy_kwargs=policy_kwargs, device="cpu")
    env.close()


def test_the_augmented_update_is_the_plain_update_on_the_moved_batch(
    tiny_folder: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every transition drawn under one symmetry (here a transpose and a mirror of x), GridDQN's update
    equals the unaugmented update on the batch whose maps were moved by hand and whose indices were permuted."""
    import agents.grid_dqn_learner as learner

    env = GridActions(tiny_map_env(tiny_folder, tiny_checkpoint), GlimpseGrid(positions=3, scales=2))
    settings = {"learning_starts": 16, "buffer_size": 64, "batch_size": 8, "learning_rate": 1e-2,
                "policy_kwargs": env.policy_kwargs(), "seed": 0, "device": "cpu"}  # fmt: skip
    augmented = GridDQN(GlimpseGridQPolicy, env, symmetry_augment=True, **settings)
    augmented.learn(16)  # fills the buffer; no update yet
    assert augmented._n_updates == 0
    plain = GridDQN(GlimpseGridQPolicy, env, symmetry_augment=False, **settings)
    plain.policy.load_state_dict(augmented.policy.state_dict())
    plain.set_logger(configure(None, []))
    batch = augmented.replay_buffer.sample(8)
    draw = torch.tensor([True, True, False])  # transpose, mirror x: code 4 + 2
    monkeypatch.setattr(learner, "random_symmetries", lambda size, square, device: draw.expand(size, -1).clone())
    moved_indices = symmetry_permutations(torch.as_tensor(env.candidates))[6][batch.actions.long()[:, 0]]
    assert not torch.equal(moved_indices, batch.actions.long()[:, 0])  # the draw moves some glimpses
    moved = batch._replace(
        observations=apply_symmetries(batch.observations, draw.expand(8, -1)),
        next_observations=apply_symmetries(batch.next_observations, draw.expand(8, -1)),
        actions=moved_indices.reshape(-1, 1).to(batch.actions.dtype),
    )
    monkeypatch.setattr(augmented.replay_buffer, "sample", lambda *args, **kwargs: batch)
    plain.replay_buffer = SimpleNamespace(sample=lambda *args, **kwargs: moved)  # type: ignore[assignment]
    before = [parameter.detach().clone() for parameter in plain.policy.parameters()]
    augmented.train(1, 8)
    plain.train(1, 8)
    for ours, theirs in zip(augmented.policy.parameters(), plain.policy.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs)
    assert any(not torch.equal(old, new) for old, new in zip(before, plain.policy.parameters(), strict=True))
    env.close()


def test_boltzmann_exploration_draws_from_the_standardised_softmax_of_the_q_values(
    tiny_folder: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agents.critic_search import standardised_boltzmann

    env = GridActions(tiny_map_env(tiny_folder, tiny_checkpoint), GlimpseGrid(positions=3, scales=2))
    model = GridDQN(GlimpseGridQPolicy, env, learning_starts=4, buffer_size=64, batch_size=8, gradient_steps=1,
                    boltzmann_sharpness=6.0, policy_kwargs=env.policy_kwargs(), seed=0, device="cpu")  # fmt: skip
    calls = []
    original = model.predict
    monkeypatch.setattr(model, "predict", lambda *a, **k: calls.append(k) or original(*a, **k))
    model.learn(12)
    assert calls and not any(k.get("deterministic") for k in calls)  # SB3 acts through it after the warm-up
    observation = env.reset()
    with torch.no_grad():
        values = model.q_net(model.policy.obs_to_tensor(observation)[0])
    greedy, _ = original(observation, deterministic=True)
    np.testing.assert_array_equal(greedy, values.argmax(dim=1).numpy())  # deterministic: SB3's argmax
    model.exploration_rate, model.boltzmann_sharpness = 0.0, 1e6  # a cold softmax is the argmax
    np.testing.assert_array_equal(original(observation)[0], greedy)
    # Draws follow the mixed distribution: 20,000 draws for the first state, each bin within 5 standard errors.
    model.exploration_rate, model.boltzmann_sharpness = 0.2, 1.0
    torch.manual_seed(0)
    many = np.repeat(observation[:1], 20_000, axis=0)
    draws = original(many)[0]
    expected = standardised_boltzmann(values[:1], 1.0, 0.2)[0].numpy()
    frequencies = np.bincount(draws, minlength=values.shape[1]) / len(draws)
    np.testing.assert_array_less(np.abs(frequencies - expected), 5 * np.sqrt(expected * (1 - expected) / len(draws)))
    assert np.abs(expected - (0.8 * (values[0] == values[0].max()).numpy() + 0.2 / values.shape[1])).max() > 0.1
    single, _ = original(observation[0])
    assert single.shape == ()  # one observation, one action, as SB3's predict
    with pytest.raises(ValueError, match="boltzmann_sharpness must be None or >= 0"):
        GridDQN(GlimpseGridQPolicy, env, boltzmann_sharpness=-1.0, policy_kwargs=env.policy_kwargs(), device="cpu")
    env.close()
