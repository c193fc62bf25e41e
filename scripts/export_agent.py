"""Export a SAC checkpoint of a train_sac.py run as a pickle-free agent (``<stem>.pt`` + ``<stem>.json``).

train_sac.py exports the last step of a run as ``<run>/agent.pt``; this exports any checkpoint of it, e.g. the one
its held-out evaluations rate best. The settings file records every setting of the run (its ``config.json``), the
checkpoint's step and, when the run's ``evaluation.json`` has one at that step, that evaluation. Load the result with
``sb3:sac:<stem>.pt`` in evaluate.py and visualize_episode.py (:func:`agents.shipped.load_agent`).

Usage::

    python scripts/export_agent.py runs/sac_digits/checkpoints/model_16000.zip --output runs/sac_digits/agent_16000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import adaglimpse_env  # noqa: F401  (registers the ids)
from agents.sac import GlimpseSAC
from agents.sb3_adapter import make_sb3_vec_env
from agents.sb3_files import SB3FileError, load_sb3
from agents.shipped import export_agent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a run's checkpoints/model_N.zip (or model.zip)")
    parser.add_argument("--output", type=Path, required=True, help="path stem of the agent files (no suffix)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = args.checkpoint.parent.parent if args.checkpoint.parent.name == "checkpoints" else args.checkpoint.parent
    try:
        config = json.loads((run / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        message = f"{args.checkpoint} is not in a train_sac.py run folder ({run / 'config.json'}: {error})"
        raise SystemExit(message) from error
    env = make_sb3_vec_env(config["env_id"], num_envs=1, **config["env_kwargs"])
    try:
        model = load_sb3(GlimpseSAC, args.checkpoint, env.observation_space, env.action_space, device="cpu")
    except SB3FileError as error:
        raise SystemExit(str(error)) from error
    glimpse_env = env.env
    evaluations = []
    evaluation_file = run / "evaluation.json"
    if evaluation_file.is_file():
        evaluations = json.loads(evaluation_file.read_text()).get("evaluations", [])
    at_step = [item for item in evaluations if item.get("timesteps") == model.num_timesteps]
    metadata = {
        "run_config": config,  # every setting of the run (train_sac.py flags or a configs/sac preset give them)
        "num_timesteps": model.num_timesteps,
        "checkpoint": str(args.checkpoint),
        "evaluation": at_step[-1] if at_step else None,
    }
    weights, settings = export_agent(
        model, args.output, config["env_id"], glimpse_env.episode.observation, metadata,
        num_glimpses=glimpse_env.episode.num_glimpses,
    )  # fmt: skip
    env.close()
    print(f"wrote {weights} and {settings} ({model.num_timesteps} env steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
