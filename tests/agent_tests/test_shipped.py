"""Agents stored without pickle: export a SAC actor, load it back into a fresh policy, same actions; bad files and
mismatched envs get clear errors."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import adaglimpse_env  # noqa: F401
from adaglimpse_env.models import create_model, save_model
from agents import shipped
from agents.policies import load_policy
from agents.sac import make_sac
from agents.sb3_adapter import GlimpseSB3VecEnv
from agents.shipped import ShippedAgentError, agent_files, export_agent, load_agent

FAST = "AdaGlimpse-ClutteredDigits-Fast-v0"


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("digits") / "micro.pt"
    save_model(path, create_model("micro", "classification", num_classes=10, depth=1), "classification")
    return path


@pytest.mark.parametrize("observation", ["full", "flat", "map"])
def test_exported_actor_acts_the_same(tmp_path: Path, classifier: Path, observation: str) -> None:
    train_env = gym.make_vec(FAST, num_envs=2, checkpoint=str(classifier), observation=observation,
                             autoreset_mode="same_step")  # fmt: skip
    model = make_sac(GlimpseSB3VecEnv(train_env), seed=0, buffer_size=64, learning_starts=0)
    with torch.no_grad():  # move the weights away from their initialisation, so equality means something
        for parameter in model.actor.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    weights, settings = export_agent(model, tmp_path / "agent", FAST, observation, {"command": "test"})
    assert json.loads(settings.read_text())["observation"] == observation
    assert all(isinstance(v, torch.Tensor) for v in torch.load(weights, weights_only=True).values())

    env = gym.make_vec(FAST, num_envs=2, checkpoint=str(classifier), observation=observation, split="val")
    env.reset(seed=0)
    observation_batch, *_ = env.step(env.action_space.sample())  # something seen: the map is not all zero
    loaded = load_agent(tmp_path / "agent", env)
    expected, _ = model.predict(observation_batch, deterministic=True)
    actions, _ = loaded.predict(observation_batch, deterministic=True)
    np.testing.assert_allclose(actions, expected, atol=1e-6)
    env.close()
    train_env.close()


def test_exported_critic_search_agent_acts_the_same_and_checks_the_geometry(tmp_path: Path, classifier: Path) -> None:
    from agents.critic_search import CriticSearch

    train_env = gym.make_vec(FAST, num_envs=2, checkpoint=str(classifier), observation="map", map_size=16,
                             autoreset_mode="same_step")  # fmt: skip
    search = CriticSearch(positions=5, scales=3)
    model = make_sac(GlimpseSB3VecEnv(train_env), seed=0, buffer_size=64, learning_starts=0, critic_search=search)
    with torch.no_grad():
        for parameter in model.critic.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    _, settings = export_agent(model, tmp_path / "agent", FAST, "map", {})
    record = json.loads(settings.read_text())
    assert record["acts_with"] == "critic_search" and record["critic_search"] == search.to_dict()
    # The networks are rebuilt from the record, not from today's defaults.
    assert record["features_extractor_kwargs"]["feature_stride"] == 4
    assert record["net_arch"] == {"pi": [256, 256], "qf": [128, 128]}

    env = gym.make_vec(FAST, num_envs=2, checkpoint=str(classifier), observation="map", map_size=16, split="val")
    env.reset(seed=0)
    observation_batch, *_ = env.step(env.action_space.sample())
    loaded = load_agent(tmp_path / "agent", env)
    np.testing.assert_allclose(
        loaded.predict(observation_batch, deterministic=True)[0],
        model.predict(observation_batch, deterministic=True)[0],
        atol=1e-6,
    )
    env.close()
    train_env.close()
    # Another budget: recorded, and the agent still loads (the map's budget channel is an input like any other).
    export_agent(model, tmp_path / "budget", FAST, "map", {}, num_glimpses=6)
    assert json.loads(agent_files(tmp_path / "budget")[1].read_text())["num_glimpses"] == 6
    longer = gym.make_vec(FAST, num_envs=1, checkpoint=str(classifier), observation="map", map_size=16,
                          num_glimpses=14)  # fmt: skip
    assert load_agent(tmp_path / "budget", longer).critic_search == search
    longer.close()
    # A file from before the networks were recorded holds the stride-4 trunk and 256-wide heads: loading a file
    # without the record builds those, so an agent with other networks must keep its record.
    stem = agent_files(tmp_path / "budget")[1]
    stem.write_text(json.dumps({k: v for k, v in json.loads(stem.read_text()).items() if k != "net_arch"}))
    longer = gym.make_vec(FAST, num_envs=1, checkpoint=str(classifier), observation="map", map_size=16)
    with pytest.raises(ShippedAgentError, match="does not fit"):
        load_agent(tmp_path / "budget", longer)
    longer.close()
    # Other glimpse sizes: the same map shape, other glimpses under each action; refused.
    other = gym.make_vec(FAST, num_envs=1, checkpoint=str(classifier), observation="map", map_size=16,
                         max_glimpse_ratio=0.5)  # fmt: skip
    with pytest.raises(ShippedAgentError, match="geometry"):
        load_agent(tmp_path / "agent", other)
    other.close()


def test_mismatched_or_broken_agents_are_refused(tmp_path: Path, classifier: Path) -> None:
    train_env = gym.make_vec(FAST, num_envs=1, checkpoint=str(classifier), observation="flat",
                             autoreset_mode="same_step")  # fmt: skip
    model = make_sac(GlimpseSB3VecEnv(train_env), seed=0, buffer_size=8, learning_starts=0)
    export_agent(model, tmp_path / "agent", FAST, "flat", {})
    full_env = gym.make_vec(FAST, num_envs=1, checkpoint=str(classifier))
    with pytest.raises(ShippedAgentError, match="observation='flat'"):
        load_agent(tmp_path / "agent", full_env)
    with pytest.raises(ShippedAgentError, match="requires"):
        load_agent(tmp_path / "missing", full_env)
    agent_files(tmp_path / "agent")[1].write_text("{not json")
    with pytest.raises(ShippedAgentError, match="not an agent settings file"):
        load_agent(tmp_path / "agent", full_env)
    full_env.close()
    train_env.close()
    # A map agent on a map of another size: refused, not silently resampled.
    map_env = gym.make_vec(FAST, num_envs=1, checkpoint=str(classifier), observation="map", map_size=16,
                           autoreset_mode="same_step")  # fmt: skip
    export_agent(make_sac(GlimpseSB3VecEnv(map_env), seed=0, buffer_size=8), tmp_path / "map", FAST, "map", {})
    other_size = gym.make_vec(FAST, num_envs=1, checkpoint=str(classifier), observation="map", map_size=24)
    with pytest.raises(ShippedAgentError, match="another map_size"):
        load_agent(tmp_path / "map", other_size)


def test_shipped_agent_is_found_when_the_name_agents_is_another_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A folder named ``agents`` without __init__.py anywhere on sys.path wins the name over an editable install
    # (the path search runs before setuptools' editable finder), as this test folder did under pytest before it was
    # renamed and a user's own ``agents`` folder can: the shipped files must still be found, and in the package.
    (tmp_path / "agents").mkdir()
    spec = importlib.machinery.PathFinder.find_spec("agents", [str(tmp_path)])
    assert spec is not None and spec.origin is None  # a namespace package
    monkeypatch.setitem(sys.modules, "agents", importlib.util.module_from_spec(spec))
    weights, settings = agent_files("embedded")
    assert weights.is_file() and settings.is_file(), (weights, settings)
    assert weights.parent == Path(shipped.__file__).resolve().parent / "assets"


def test_the_name_agents_is_the_package_in_tests() -> None:
    # No test folder may be called ``agents``: pytest puts tests/ on sys.path, and such a folder would take the name
    # from the package, so that agents/__init__.py never ran in tests (as before tests/agent_tests was renamed).
    import agents

    assert (
        agents.__file__ is not None
        and Path(agents.__file__).resolve().parent == Path(shipped.__file__).resolve().parent
    )


def test_shipped_agent_loads_by_name_and_acts() -> None:
    settings = agent_files("embedded")[1]
    preset = json.loads(settings.read_text())["observation"]
    env = gym.make_vec("AdaGlimpse-ClutteredDigits-v0", num_envs=2, split="val", observation=preset)
    observation, _ = env.reset(seed=0)
    policy = load_policy("sb3:sac:embedded", env)
    actions, _ = policy.predict(observation, deterministic=True)
    assert actions.shape == (2, 3) and np.isfinite(actions).all() and np.abs(actions).max() <= 1
    env.close()


def test_shipped_agent_beats_random_on_val_scenes() -> None:
    # The learnt policy CI checks: the shipped SAC agent (trained by the command in its settings file) against the
    # random baseline on the same 64 val scenes of its id; measured margins are in docs/results.md.
    from agents.baselines import make_baseline
    from agents.evaluation import run_policy

    settings = agent_files("embedded")[1]
    record = json.loads(settings.read_text())
    env = gym.make_vec(record["env_id"], num_envs=16, split="val", observation=record["observation"])
    torch.manual_seed(0)
    learnt = run_policy(env, load_policy("sb3:sac:embedded", env), episodes=64, seed=0)
    random = run_policy(env, make_baseline("random", env, seed=0), episodes=64, seed=0)
    env.close()
    assert learnt["metric_by_glimpse"][-1] >= random["metric_by_glimpse"][-1] + 0.1, (learnt, random)
