"""The algorithms ``scripts/benchmark_agents.py`` trains, by name, each built the same way on a glimpse env.

A factory takes ``(env, seed, device, **overrides)`` and returns an SB3 algorithm ready to ``learn``; the
overrides (the script's ``--algorithm-kwargs``) replace its constructor arguments. Every factory here names the
constructors it passes them to, so that :func:`check_overrides` refuses a misspelt or foreign argument before any
run starts; a user's own factory (``ALGORITHMS["my_sac"] = ...``) need not, and raises its own error.

``sac`` is the paper's SAC (:func:`agents.sac.make_sac`: its actor), ``sac_search`` the same SAC acting by
searching its map critic (:mod:`agents.critic_search`), ``ppo_grid`` PPO with a categorical policy over a grid of
glimpses (:mod:`agents.grid_policy`), ``dqn_grid`` DQN over the same grid as discrete actions
(:mod:`agents.grid_dqn`); the others are SB3's and sb3-contrib's with the trunk and buffer of
:func:`agents.trunks.policy_setup`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.critic_search import CriticSearch
from agents.grid_dqn import GlimpseGridQPolicy, GridActions
from agents.grid_dqn_learner import GridDQN
from agents.grid_policy import GlimpseGridPolicy
from agents.map_critic import glimpse_geometry_of
from agents.replay import Float16ReplayBuffer, float16_n_step_settings
from agents.sac import make_sac
from agents.trunks import policy_setup


class AlgorithmSettingsError(ValueError):
    """Overrides an algorithm does not take, or take in another form."""


#: ``factory(env, seed, device, **overrides)``: the algorithm, with ``overrides`` (``--algorithm-kwargs``) replacing
#: its constructor arguments. A factory may name the constructors it passes ``overrides`` to (:func:`_passes_to`),
#: so that a wrong name is refused before anything is built.
Factory = Callable[..., BaseAlgorithm]


def _passes_to(
    *constructors: Callable[[], Callable[..., Any]], fixed: tuple[str, ...] = ()
) -> Callable[[Factory], Factory]:
    """Mark a factory as passing its ``overrides`` to these constructors (each given lazily: a zero-argument
    callable, so that an optional package is imported only when its algorithm is built), except the arguments
    ``fixed`` that the factory sets itself."""

    def mark(build: Factory) -> Factory:
        build.constructors = constructors  # type: ignore[attr-defined]
        build.fixed = frozenset(fixed)  # type: ignore[attr-defined]
        return build

    return mark


def accepted_overrides(factory: Factory) -> frozenset[str] | None:
    """The keyword arguments ``factory`` can take as overrides, or None where it does not say (a user's own)."""
    constructors = getattr(factory, "constructors", None)
    if constructors is None:
        return None
    names: set[str] = set()
    for constructor in constructors:
        for name, parameter in inspect.signature(constructor()).parameters.items():
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY) and name[0] != "_":
                names.add(name)
    # env, seed and device come from the benchmark; the policy is each factory's own.
    return frozenset(names - {"self", "env", "seed", "device", "policy", *getattr(factory, "fixed", ())})


def _off_policy(algorithm: type[OffPolicyAlgorithm], **kwargs: Any) -> Factory:
    @_passes_to(lambda: algorithm)
    def build(env: VecEnv, seed: int, device: str, **overrides: Any) -> BaseAlgorithm:
        setup = policy_setup(env.observation_space)
        settings = {"policy_kwargs": setup.policy_kwargs, "replay_buffer_class": setup.replay_buffer_class,
                    "buffer_size": 10_000, "batch_size": 128, **kwargs, **overrides}  # fmt: skip
        return algorithm(setup.policy, env, seed=seed, device=device, **float16_n_step_settings(settings))

    return build


def _on_policy(algorithm: type[BaseAlgorithm], **kwargs: Any) -> Factory:
    @_passes_to(lambda: algorithm)
    def build(env: VecEnv, seed: int, device: str, **overrides: Any) -> BaseAlgorithm:
        setup = policy_setup(env.observation_space, on_policy=True)
        settings = {"policy_kwargs": setup.policy_kwargs, **kwargs, **overrides}
        return algorithm(setup.policy, env, seed=seed, device=device, **settings)

    return build


def _contrib_class(name: str) -> type[OffPolicyAlgorithm]:
    try:
        import sb3_contrib
    except ImportError as error:
        raise ImportError(f"{name} needs sb3-contrib: pip install 'adaglimpse-env[benchmark]'") from error
    algorithm: type[OffPolicyAlgorithm] = getattr(sb3_contrib, name)
    return algorithm


def _contrib(name: str, **kwargs: Any) -> Factory:
    @_passes_to(lambda: _contrib_class(name))
    def build(env: VecEnv, seed: int, device: str, **overrides: Any) -> BaseAlgorithm:
        return _off_policy(_contrib_class(name), **kwargs)(env, seed, device, **overrides)

    return build


@_passes_to(lambda: make_sac, lambda: SAC, fixed=("critic_search",))
def _sac(env: VecEnv, seed: int, device: str, **overrides: Any) -> BaseAlgorithm:
    """The paper's SAC (:func:`agents.sac.make_sac`: its actor) after the common uniform warm-up."""
    return make_sac(env, seed=seed, device=device, **{"learning_starts": 2_000, **overrides})


@_passes_to(lambda: make_sac, lambda: SAC, fixed=("critic_search",))
def _sac_search(env: VecEnv, seed: int, device: str, **overrides: Any) -> BaseAlgorithm:
    """SAC acting by critic search (``map`` observation only), with the settings of train_sac.py's default run
    (configs/sac/digits.yaml) but the common uniform warm-up."""
    settings = {"lr_schedule": False, "learning_starts": 2_000, "batch_size": 64, "gradient_steps": 4,
                "buffer_size": 30_000, **overrides}  # fmt: skip
    model = make_sac(env, seed=seed, device=device, critic_search=CriticSearch(), **settings)
    model.symmetry_augment = True
    return model


def _merged_policy_kwargs(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The factory's ``policy_kwargs`` with an override's keys on top (the glimpse geometry and grid stay unless
    given), e.g. ``policy_kwargs='{"features_extractor_kwargs": {"summary_dim": 128}}'``."""
    given = overrides.pop("policy_kwargs", None) or {}
    if not isinstance(given, dict):
        raise AlgorithmSettingsError(f"the policy_kwargs override must be a JSON object (a dict), got {given!r}")
    return {**defaults, **given}


@_passes_to(lambda: PPO)
def _ppo_grid(env: VecEnv, seed: int, device: str, **overrides: Any) -> BaseAlgorithm:
    """PPO with a categorical policy over a grid of glimpses scored from the map (``map`` observation only;
    :mod:`agents.grid_policy`), PPO's other settings as the ``ppo`` entry's."""
    geometry = glimpse_geometry_of(env)
    if geometry is None:
        raise ValueError("ppo_grid needs a glimpse env with the 'map' observation (--env-kwargs observation=map)")
    policy_kwargs = _merged_policy_kwargs({"glimpse_geometry": geometry}, overrides)
    settings = {"n_steps": 64, "batch_size": 128, **overrides, "policy_kwargs": policy_kwargs}
    return PPO(GlimpseGridPolicy, env, seed=seed, device=device, **settings)


#: dqn_grid's per-glimpse scorer, as wide as what the critic-search SAC's critic reads (the trunk's 32 channels at
#: 16 points under each glimpse, two hidden layers of 128) instead of the grid policy's 8 channels and one layer
#: of 64; measured only together with the factory's other settings (docs/results.md).
DQN_GRID_SCORER = {"score_channels": 32, "score_net": [128, 128]}


@_passes_to(lambda: GridDQN, lambda: DQN)
def _dqn_grid(env: VecEnv, seed: int, device: str, **overrides: Any) -> BaseAlgorithm:
    """DQN over the grid of glimpses of ``ppo_grid`` as discrete actions (:mod:`agents.grid_dqn`: a Q-network
    that reads the map under each glimpse; ``map`` observation only), trained by GridDQN
    (:mod:`agents.grid_dqn_learner`: the replayed glimpse and a coarse target grid, symmetry augmentation), with
    the off-policy entries' uniform warm-up, sac_search's replay (4 updates of 64 per vector step, a 30k float16
    buffer) and its learning rate and target-network speed (1e-3; a Polyak step of 0.02 every 16 env steps: every
    vector step with 16 envs), and the critic search's exploration: Boltzmann over the standardised Q-values
    (sharpness 6) with a uniform share decaying to 0.1 over the first 10% of the budget (session 16: above random
    on each of 3 seeds at 32k, where epsilon-greedy learnt on one; docs/results.md). The rest was found on the fast
    digits id, seed 0, 32k steps, one run each (docs/results.md): the entry's previous settings (SB3's learning
    rate 1e-4, a hard copy every 1,000 steps, epsilon over 25%, the grid policy's narrower scorer), the same at
    3e-4, and these settings with epsilon over 25% stayed at random's level. An override's
    ``features_extractor_kwargs`` are merged key by key over :data:`DQN_GRID_SCORER`."""
    grid_env = GridActions(env)
    given = overrides.get("policy_kwargs")
    if isinstance(given, dict):  # anything else: _merged_policy_kwargs refuses it
        scorer = {**DQN_GRID_SCORER, **(given.get("features_extractor_kwargs") or {})}
        overrides["policy_kwargs"] = {**given, "features_extractor_kwargs": scorer}
    defaults = {**grid_env.policy_kwargs(), "features_extractor_kwargs": dict(DQN_GRID_SCORER)}
    policy_kwargs = _merged_policy_kwargs(defaults, overrides)
    settings = {"replay_buffer_class": Float16ReplayBuffer, "buffer_size": 30_000, "batch_size": 64,
                "learning_starts": 2_000, "train_freq": 1, "gradient_steps": 4, "learning_rate": 1e-3,
                "tau": 0.02, "target_update_interval": 16, "exploration_fraction": 0.1,
                "exploration_final_eps": 0.1, "boltzmann_sharpness": 6.0, "symmetry_augment": True, **overrides,
                "policy_kwargs": policy_kwargs}  # fmt: skip
    return GridDQN(GlimpseGridQPolicy, grid_env, seed=seed, device=device, **float16_n_step_settings(settings))


#: name -> factory(env, seed, device, **overrides); what each entry is: the module docstring.
ALGORITHMS: dict[str, Factory] = {
    "sac": _sac,
    "sac_search": _sac_search,
    "td3": _off_policy(TD3, learning_starts=2_000),
    "ddpg": _off_policy(DDPG, learning_starts=2_000),
    "tqc": _contrib("TQC", learning_starts=2_000),
    "crossq": _contrib("CrossQ", learning_starts=2_000),
    "ppo": _on_policy(PPO, n_steps=64, batch_size=128),
    "a2c": _on_policy(A2C, n_steps=16),
    "ppo_grid": _ppo_grid,
    "dqn_grid": _dqn_grid,
}


def build_algorithm(name: str, env: VecEnv, seed: int, device: str, overrides: dict[str, Any]) -> BaseAlgorithm:
    """``ALGORITHMS[name]`` on ``env``, with ``overrides`` of its constructor arguments (none: the factory is
    called with three arguments, as a factory without ``**overrides`` expects).

    Raises:
        AlgorithmSettingsError: an override the algorithm does not take (checked before anything is built, where
            the factory names its constructors; a factory that does not raises its own ``TypeError``).
    """
    if not overrides:
        return ALGORITHMS[name](env, seed, device)
    check_overrides([name], overrides)
    return ALGORITHMS[name](env, seed, device, **overrides)


def unknown_overrides_message(name: str, unknown: list[str], accepted: frozenset[str]) -> str:
    """Why ``--algorithm-kwargs`` ``unknown`` cannot go to algorithm ``name``."""
    examples = [
        key for key in ("learning_rate", "batch_size", "n_steps", "learning_starts", "gamma") if key in accepted
    ]
    return (
        f"overrides {unknown} do not fit {name}: it takes its constructor's arguments (e.g. "
        f"{', '.join(examples)}) except env, seed, device, policy and those the benchmark sets for it; benchmark "
        "algorithms that differ in other ways separately"
    )


def check_overrides(names: list[str], overrides: dict[str, Any]) -> None:
    """Refuse, before any run starts, overrides that one of the algorithms ``names`` does not take.

    Raises:
        AlgorithmSettingsError: the first algorithm with an override it does not take.
    """
    for name in names:
        accepted = accepted_overrides(ALGORITHMS[name])
        unknown = sorted(set(overrides) - accepted) if accepted is not None and overrides else []
        if unknown:
            raise AlgorithmSettingsError(unknown_overrides_message(name, unknown, accepted or frozenset()))
