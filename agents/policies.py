"""Load any glimpse policy from a short spec string: a baseline name, an SB3 zip, or the actor of an original
AdaGlimpse checkpoint. Shared by ``scripts/evaluate.py`` and ``scripts/visualize_episode.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adaglimpse_env import GlimpseVectorEnv
from agents.baselines import BASELINES, make_baseline
from agents.grid_dqn import acting_policy, saved_grid_actions
from agents.sb3_files import load_sb3
from agents.shipped import SHIPPED_AGENTS, load_agent

SB3_ALGORITHMS = ("SAC", "TD3", "DDPG", "PPO", "A2C", "DQN")
CONTRIB_ALGORITHMS = ("TQC", "CrossQ")
POLICY_SPEC_HELP = (
    f"a baseline ({', '.join(BASELINES)}; greedy is an oracle that sees the image: an upper bound), "
    "'sb3:<algo>:<path.zip>' (e.g. sb3:sac:runs/sac_digits/model.zip), 'sb3:sac:<path/agent.pt>' (an actor "
    "exported by train_sac.py, loaded without pickle), 'sb3:sac:embedded' (the SAC agent shipped for "
    "AdaGlimpse-ClutteredDigits-v0) or 'original:<checkpoint.ckpt>'"
)


def sb3_algorithms() -> dict[str, Any]:
    """Lower-case name -> SB3 algorithm class, including sb3-contrib's when installed."""
    import stable_baselines3

    algorithms = {name.lower(): getattr(stable_baselines3, name) for name in SB3_ALGORITHMS}
    try:
        import sb3_contrib
    except ImportError:  # optional dependency
        return algorithms
    return algorithms | {
        name.lower(): getattr(sb3_contrib, name) for name in CONTRIB_ALGORITHMS if hasattr(sb3_contrib, name)
    }


def load_policy(
    spec: str, env: GlimpseVectorEnv, seed: int = 0, device: str = "cpu", trust_pickle: bool = False
) -> Any:
    """An object with SB3's ``predict(observation, deterministic=...)`` for ``env``.

    Args:
        spec: a baseline name, ``sb3:<algo>:<path.zip>`` or ``original:<checkpoint>``.
        env: the env the policy will act in (baselines read its geometry; original actors its model size).
        seed: seed of the random baseline.
        device: where SB3 policies run.
        trust_pickle: unpickle what an SB3 zip holds, as plain SB3 does (only for files you trust); by default
            nothing in it is unpickled (:func:`agents.sb3_files.load_sb3`).

    Raises:
        ValueError: an unknown spec or algorithm, or an SB3 zip with pickled entries this loader does not rebuild
            (:class:`agents.sb3_files.SB3FileError`).
        FileNotFoundError: the zip or checkpoint does not exist.
    """
    if spec in BASELINES:
        return make_baseline(spec, env, seed=seed)
    if spec.startswith("sb3:"):
        parts = spec.split(":", 2)
        if len(parts) != 3:
            raise ValueError(f"an SB3 policy spec requires 'sb3:<algo>:<path.zip>', got {spec!r}")
        _, algo, path = parts
        if algo.lower() == "sac" and (path in SHIPPED_AGENTS or path.endswith(".pt")):
            return load_agent(path, env, device=device)  # pickle-free: a shipped name or an exported agent.pt
        algorithms = sb3_algorithms()
        if algo.lower() not in algorithms:
            raise ValueError(f"sb3:<algo>:<path> requires algo in {sorted(algorithms)}, got {algo!r}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"policy {spec!r}: no SB3 zip at {path}")
        # A DQN acts on the glimpse grid's indices (agents/grid_dqn.py): its space comes from the grid it saved,
        # and it acts on the env through GridActing.
        action_space = saved_grid_actions(path) if algo.lower() == "dqn" else env.single_action_space
        model = load_sb3(
            algorithms[algo.lower()],
            path,
            env.single_observation_space,
            action_space,
            device=device,
            trust_pickle=trust_pickle,
        )
        return acting_policy(model)
    if spec.startswith("original:"):
        from agents.original_policy import load_original_policy

        return load_original_policy(spec.split(":", 1)[1], env)
    raise ValueError(f"a policy spec requires {POLICY_SPEC_HELP}, got {spec!r}")


def policy_label(spec: str) -> str:
    """A short name for tables and pictures: ``sb3:sac:runs/x/model.zip`` -> ``sac (model.zip)``."""
    if spec.startswith("sb3:"):
        _, algo, path = spec.split(":", 2)
        if path in SHIPPED_AGENTS:
            return f"{algo.lower()} (shipped)"
        return f"{algo.lower()} ({Path(path).parent.name or Path(path).name})"
    if spec.startswith("original:"):
        return f"original ({Path(spec.split(':', 1)[1]).name})"
    return spec
