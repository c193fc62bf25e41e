"""train_sac, evaluate and benchmark_agents end to end on a tiny env (generated folder, 1-block model)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import benchmark_agents  # noqa: E402
import evaluate  # noqa: E402
import plot_learning_curves  # noqa: E402
import train_sac  # noqa: E402
from tiny_models import tiny_model  # noqa: E402

from adaglimpse_env.models import save_model  # noqa: E402
from agents import algorithms  # noqa: E402
from agents.algorithms import AlgorithmSettingsError  # noqa: E402


@pytest.fixture(scope="module")
def env_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("script_env")
    for i in range(5):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(root / f"{i}.png")
    save_model(root / "tiny.pt", tiny_model(), "reconstruction")
    kwargs = [f"data_root={root}", f"checkpoint={root / 'tiny.pt'}", "num_glimpses=2"]
    return ["--env-id", "AdaGlimpse-ImageFolder-v0", "--env-kwargs", *kwargs]


def sac_args(env_args: list[str], output: Path, total: int, observation: str = "full") -> list[str]:
    # 'full' by default: the paper's agent (train_sac's default is the map with critic search).
    return [
        *env_args, f"observation={observation}", *(["map_size=16"] if observation == "map" else []),
        "--num-envs", "2", "--total-timesteps", str(total), "--learning-starts", "8", "--buffer-size", "64",
        "--batch-size", "8", "--eval-every", "1000000", "--eval-episodes", "2", "--eval-envs", "2",
        "--checkpoint-every", "16", "--output", str(output), "--no-progress-bar", "--threads", "1",
    ]  # fmt: skip


def tensorboard_tags(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in folder.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"images": 1, "scalars": 1})
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"]) | set(accumulator.Tags()["images"])
    return tags


def test_train_sac_writes_checkpoint_and_evaluation(env_args: list[str], tmp_path: Path) -> None:
    assert train_sac.main(sac_args(env_args, tmp_path, 32)) == 0
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress == {"num_timesteps": 32, "replay_buffer": True}
    summary = json.loads((tmp_path / "evaluation.json").read_text())
    assert summary["num_timesteps"] == 32 and len(summary["evaluations"][-1]["metric_by_glimpse"]) == 3
    assert all(0 <= row["train_wall_s"] <= row["wall_s"] for row in summary["evaluations"])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries
    # The paper's agent on 'full' has no map to mirror and no map for the salient warm-up: config.json records
    # what ran, not the defaults.
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["symmetry_augment"] is False and config["warmup_policy"] is None

    # Every TensorBoard tag the README promises: episode return, final score, task metric and pixels seen of
    # training episodes; the held-out metric after each glimpse; losses; the entropy coefficient; the pictures.
    tags = tensorboard_tags(tmp_path / "tensorboard")
    readme = (SCRIPTS.parent / "README.md").read_text()
    pictures = {tag.replace("<metric>", "rmse") for tag in re.findall(r"`(eval/[a-z_<>]+)`", readme)}
    assert pictures == {"eval/episodes", "eval/rmse_by_glimpse", "eval/where_it_looks"}
    expected = {
        "rollout/ep_rew_mean", "episode/final_score", "episode/rmse", "episode/pixel_fraction",
        "eval/rmse_after_00_glimpses", "eval/rmse_after_02_glimpses", "eval/final_score",
        "train/actor_loss", "train/critic_loss", "train/ent_coef", *pictures,
    }  # fmt: skip
    assert expected <= tags, sorted(expected - tags)


def test_train_sac_time_limit_counts_training_only(env_args: list[str], tmp_path: Path, monkeypatch) -> None:
    from agents.callbacks import WallClockLimitCallback

    limits: list[WallClockLimitCallback] = []

    class Recorded(WallClockLimitCallback):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            limits.append(self)

    monkeypatch.setattr(train_sac, "WallClockLimitCallback", Recorded)
    argv = [*sac_args(env_args, tmp_path, 400, "flat"), "--time-limit-min", "0.0001", "--eval-every", "8"]
    assert train_sac.main(argv) == 0
    (limit,) = limits
    assert limit.evaluation is not None and limit.evaluation.history  # the held-out evaluations are left out
    summary = json.loads((tmp_path / "evaluation.json").read_text())
    assert limit.stopped_at == summary["num_timesteps"] < 400
    final = summary["evaluations"][-1]
    assert 0 <= final["train_wall_s"] <= summary["wall_time_s"]


@pytest.mark.parametrize("observation", ["latent", "flat", "map"])
def test_train_sac_trains_every_preset_and_exports_a_pickle_free_actor(
    env_args: list[str], tmp_path: Path, observation: str
) -> None:
    # 'latent' gets the original trunk over its streams, 'flat' SB3's MLP, 'map' the critic search (the default);
    # each ends with agent.pt + agent.json.
    import gymnasium as gym

    from agents.shipped import load_agent

    assert train_sac.main(sac_args(env_args, tmp_path, 32, observation)) == 0
    settings = json.loads((tmp_path / "agent.json").read_text())
    assert settings["observation"] == observation and settings["num_timesteps"] == 32
    assert "agent.pt" in json.loads((tmp_path / "run_manifest.json").read_text())["files"]
    from agents.config import parse_key_values

    kwargs = parse_key_values(env_args[env_args.index("--env-kwargs") + 1 :])
    if observation == "map":  # train_sac's default agent: it acts by critic search, and its export says so
        assert settings["acts_with"] == "critic_search" and settings["num_glimpses"] == 2
        kwargs["map_size"] = 16
    env = gym.make_vec(settings["env_id"], num_envs=2, split="val", observation=observation, **kwargs)
    observations, _ = env.reset(seed=0)
    actions, _ = load_agent(tmp_path / "agent.pt", env).predict(observations, deterministic=True)
    assert actions.shape == (2, 3)
    env.close()


def test_killed_run_resumes_from_last_checkpoint(env_args: list[str], tmp_path: Path) -> None:
    # A long run killed with SIGKILL once its first checkpoint exists, then resumed to a short total.
    command = [sys.executable, str(SCRIPTS / "train_sac.py"), *sac_args(env_args, tmp_path, 100_000)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    deadline = time.time() + 240
    while not (tmp_path / "progress.json").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = json.loads((tmp_path / "progress.json").read_text())["num_timesteps"]
    assert saved >= 16
    # The folder moved before resuming (copied elsewhere, as when a run is archived or shared): the resumed run
    # writes only there, its TensorBoard logs included (they went to the old folder, named in the zip, before).
    moved = tmp_path.parent / f"{tmp_path.name}_moved"
    shutil.copytree(tmp_path, moved)
    events_before = set(tmp_path.rglob("events.out.tfevents.*"))
    # Another --gradient-steps on resume: the run keeps its own, and config.json says so.
    resumed = [*sac_args(env_args, moved, saved + 16), "--resume", "--gradient-steps", "3"]
    assert train_sac.main(resumed) == 0
    progress = json.loads((moved / "progress.json").read_text())
    assert progress["num_timesteps"] == saved + 16
    config = json.loads((moved / "config.json").read_text())
    assert config["gradient_steps"] == train_sac.TrainConfig.gradient_steps and config["batch_size"] == 8

    from agents.replay import stored_transitions

    assert stored_transitions(moved / "replay_buffer.npz") == saved + 16
    assert set(tmp_path.rglob("events.out.tfevents.*")) == events_before
    new_events = set(moved.rglob("events.out.tfevents.*")) - {moved / p.relative_to(tmp_path) for p in events_before}
    assert new_events and tensorboard_tags(next(iter(new_events)).parent)
    shutil.rmtree(moved)


def test_evaluate_prints_table_and_writes_files(env_args: list[str], tmp_path: Path, capsys) -> None:
    args = [*env_args, "--policies", "random", "raster", "--episodes", "3", "--num-envs", "2", "--mean-image",
            "--show-glimpses", "0", "1", "2", "--output", str(tmp_path / "results")]  # fmt: skip
    assert evaluate.main(args) == 0
    out = capsys.readouterr().out
    assert "| raster |" in out and "mean-image predictor" in out
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [r["policy"] for r in rows] == ["random", "raster", "mean-image predictor"]
    assert all(len(r["metric_by_glimpse"]) == 3 for r in rows)
    assert (tmp_path / "results.csv").read_text().startswith("policy,final_score")


def test_evaluate_adds_each_policys_glimpse_canvas(env_args: list[str], tmp_path: Path, capsys) -> None:
    args = [*env_args, "--policies", "random", "whole-first", "--episodes", "2", "--num-envs", "2", "--canvas",
            "--output", str(tmp_path / "results")]  # fmt: skip
    assert evaluate.main(args) == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    canvas = "glimpse canvas (its glimpses drawn back, no model)"
    assert [r["policy"] for r in rows] == ["random", f"random: {canvas}", "whole-first", f"whole-first: {canvas}"]
    model, drawn = rows[2], rows[3]
    assert drawn["pixel_fraction"] == model["pixel_fraction"] == 1.0  # the same episodes
    assert drawn["metric_by_glimpse"][0] != model["metric_by_glimpse"][0]  # the mean colour, not the model
    assert drawn["final_score"] == pytest.approx(-drawn["metric_by_glimpse"][-1], rel=0.2)
    assert len(drawn["seen_model_rmse_by_glimpse"]) == 3 and drawn["seen_share_by_glimpse"][-1] == 1.0
    assert drawn["seen_canvas_rmse_by_glimpse"][-1] == pytest.approx(drawn["metric_by_glimpse"][-1], rel=1e-6)
    out = capsys.readouterr().out
    assert "random: glimpse canvas" in out and "| whole-first | 1.000 |" in out


def test_evaluate_refuses_the_canvas_on_other_tasks(tmp_path: Path) -> None:
    args = ["--env-id", "AdaGlimpse-ClutteredDigits-Fast-v0", "--policies", "random", "--episodes", "1",
            "--num-envs", "1", "--canvas", "--output", str(tmp_path / "results")]  # fmt: skip
    with pytest.raises(SystemExit, match="--canvas needs a reconstruction env"):
        evaluate.main(args)


def test_evaluate_takes_the_split_from_env_kwargs(env_args: list[str], tmp_path: Path, capsys) -> None:
    args = [*env_args, "split=train", "--policies", "random", "--episodes", "2", "--num-envs", "2",
            "--output", str(tmp_path / "results")]  # fmt: skip
    assert evaluate.main(args) == 0  # was: "got multiple values for keyword argument 'split'"
    assert "train split" in capsys.readouterr().out  # --env-kwargs wins over --split (default val)


def test_benchmark_agents_table(env_args: list[str], tmp_path: Path, capsys) -> None:
    args = [*env_args, "--algorithms", "sac", "ppo", "--baselines", "random", "--seeds", "0", "--timesteps", "16",
            "--num-envs", "2", "--eval-episodes", "2", "--eval-envs", "2",
            "--output", str(tmp_path / "r.json")]  # fmt: skip
    assert benchmark_agents.main(args) == 0
    out = capsys.readouterr().out
    for name in ("sac", "ppo", "random"):
        assert f"| {name} | 1 |" in out
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    assert {r["name"] for r in results} == {"sac", "ppo", "random"}


def test_benchmark_agents_learning_curves_and_their_plot(env_args: list[str], tmp_path: Path, capsys) -> None:
    args = [*env_args, "--algorithms", "ppo", "--baselines", "random", "--seeds", "0", "1", "--timesteps", "16",
            "--num-envs", "2", "--eval-episodes", "2", "--eval-envs", "2", "--curve-every", "4",
            "--curve-episodes", "2", "--output", str(tmp_path / "r.json")]  # fmt: skip
    assert benchmark_agents.main(args) == 0
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    for run in (r for r in results if r["name"] == "ppo"):
        # PPO overshoots the 16 steps to one rollout (2 envs x 64 steps): a point at every multiple of 4 on the way.
        steps = [point["timesteps"] for point in run["curve"]]
        assert steps == list(range(4, run_steps(run) + 1, 4)) and run_steps(run) >= 16
        assert all(point["wall_s"] >= 0.0 for point in run["curve"])
        assert all(len(point["metric_by_glimpse"]) == 3 for point in run["curve"])
    assert all("curve" not in r for r in results if r["name"] == "random")
    capsys.readouterr()

    picture = tmp_path / "curves.png"
    assert plot_learning_curves.main([str(tmp_path / "r.json"), "--output", str(picture)]) == 0
    out = capsys.readouterr().out
    assert "| env steps | ppo (2 seeds) | random (baseline) (2 seeds) |" in out
    ppo = [r for r in results if r["name"] == "ppo"]
    first = np.mean([r["curve"][0]["final_metric"] for r in ppo])
    random_value = np.mean([r["final_metric"] for r in results if r["name"] == "random"])
    assert f"| {ppo[0]['curve'][0]['timesteps']} | {first:.3f} | {random_value:.3f} |" in out
    assert Image.open(picture).size == (480, 300)


def run_steps(run: dict) -> int:
    return max(point["timesteps"] for point in run["curve"])


def test_plot_learning_curves_refuses_runs_without_curves(env_args: list[str], tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text(json.dumps({"results": [{"name": "random", "seed": 0, "final_metric": 1.0}]}))
    with pytest.raises(SystemExit, match="no learned run"):
        plot_learning_curves.main([str(tmp_path / "r.json")])
    # A learned run without points is refused by name, not drawn as a flat baseline.
    runs = [{"name": "ppo", "seed": 0, "final_metric": 0.5, "curve": []}]
    (tmp_path / "r.json").write_text(json.dumps({"results": runs}))
    with pytest.raises(SystemExit, match="ppo seed 0 has no learning curve"):
        plot_learning_curves.main([str(tmp_path / "r.json")])
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(SystemExit, match="not a results file"):
        plot_learning_curves.main([str(tmp_path / "bad.json")])


def test_plot_learning_curves_keeps_the_points_every_run_shares(tmp_path: Path, capsys) -> None:
    def run(name: str, seed: int, steps: list[int], value: float) -> dict:
        curve = [
            {"timesteps": step, "wall_s": 1.0, "final_metric": value, "metric_by_glimpse": [value]} for step in steps
        ]
        return {"name": name, "seed": seed, "final_metric": value, "curve": curve}

    runs = [run("sac", 0, [4, 8], 0.2), run("sac", 1, [4, 8], 0.4), run("ppo", 0, [4, 8, 12], 0.1)]
    (tmp_path / "r.json").write_text(json.dumps({"results": runs}))
    assert plot_learning_curves.main([str(tmp_path / "r.json"), "--output", str(tmp_path / "c.png")]) == 0
    captured = capsys.readouterr()
    assert "| 8 | 0.300 | 0.100 |" in captured.out and "| 12 |" not in captured.out
    assert "ppo seed 0's points at [12] are left out" in captured.err


def test_plot_learning_curves_per_training_minute_of_run_folders(tmp_path: Path, capsys) -> None:
    def run_folder(name: str, points: list[tuple[float, float]], **config: object) -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True)
        evaluations = [
            {"timesteps": 100 * index, "wall_s": seconds + 20.0 * index, "train_wall_s": seconds,
             "metric": "accuracy", "metric_by_glimpse": [0.1, value]}
            for index, (seconds, value) in enumerate(points, start=1)
        ]  # fmt: skip
        (folder / "evaluation.json").write_text(json.dumps({"num_timesteps": 300, "evaluations": evaluations}))
        (folder / "config.json").write_text(json.dumps({"resume": False, "time_limit_min": None, **config}))
        return folder

    # A fast run evaluated every 50 s of training, a slow one every 110 s and stopped by a 3-minute budget a
    # moment past it (its final evaluation counts at the budget): each minute shows the latest value.
    fast = run_folder("fast", [(50.0, 0.2), (100.0, 0.4), (150.0, 0.5)])
    slow = run_folder("slow", [(110.0, 0.3), (180.4, 0.35)], time_limit_min=3)
    picture = tmp_path / "minutes.png"
    argv = ["--runs", str(fast), str(slow), "--minute-step", "1", "--reference", "random=0.1", "--output", str(picture)]
    assert plot_learning_curves.main(argv) == 0
    out = capsys.readouterr().out
    assert "| training minutes | fast (300 steps) | slow (300 steps) | random (reference) |" in out
    assert "| 0 |  |  | 0.100 |" in out and "| 1 | 0.200 |  | 0.100 |" in out
    assert "| 2 | 0.400 | 0.300 | 0.100 |" in out and "| 3 | 0.500 | 0.350 | 0.100 |" in out
    assert Image.open(picture).size == (480, 300)

    def refused(argv: list[str], match: str) -> None:
        with pytest.raises(SystemExit, match=match):
            plot_learning_curves.main(argv)

    # A folder of an older run, whose evaluations lack their training time, is named in the error.
    old = run_folder("old", [])
    (old / "evaluation.json").write_text(json.dumps({"num_timesteps": 1, "evaluations": [{"wall_s": 1.0}]}))
    refused(["--runs", str(old)], "train_wall_s")
    refused(["--runs", str(run_folder("empty", []))], "holds no evaluation")
    refused(["--runs", str(run_folder("resumed", [(10.0, 0.1)], resume=True))], "is a resumed run")
    refused(["--runs", str(fast), str(run_folder("other/fast", [(10.0, 0.1)]))], "two run folders are named 'fast'")
    refused(["--runs", str(fast), "--reference", "random"], "NAME=VALUE with a number")
    refused([str(tmp_path / "r.json"), "--runs", str(fast)], "got both")
    refused([], "got neither")
    refused([str(tmp_path / "r.json"), "--reference", "random=0.1"], "leave them out with results files")


def test_benchmark_agents_critic_search_with_early_stop(env_args: list[str], tmp_path: Path, capsys) -> None:
    # The map observation (sac_search needs it), a second evaluation with early stop, the per-glimpse columns.
    args = [*env_args, "observation=map", "map_size=16", "--algorithms", "sac_search", "--baselines", "random",
            "--seeds", "0", "--timesteps", "16", "--num-envs", "2", "--eval-episodes", "2", "--eval-envs", "2",
            "--early-stop", "-1000", "--output", str(tmp_path / "r.json")]  # fmt: skip
    assert benchmark_agents.main(args) == 0
    out = capsys.readouterr().out
    assert "| policy | seeds | rmse @1 | rmse @2 | early stop: rmse | glimpses used |" in out
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    # A threshold every score reaches: each episode stops after its first glimpse.
    assert [r["early_stop_glimpses"] for r in results] == [1.0, 1.0]
    assert all(r["early_stop_metric"] == r["metric_by_glimpse"][1] for r in results)


def test_benchmark_agents_grid_ppo_with_algorithm_kwargs(env_args: list[str], tmp_path: Path, capsys) -> None:
    # PPO with the grid policy, its settings changed from the command line; an argument it does not take is named.
    args = [*env_args, "observation=map", "map_size=16", "--algorithms", "ppo_grid", "--algorithm-kwargs",
            "n_steps=4", "batch_size=8", "learning_rate=0.001", "--baselines", "--seeds", "0", "--timesteps", "8",
            "--num-envs", "2", "--eval-episodes", "2", "--eval-envs", "2",
            "--output", str(tmp_path / "r.json")]  # fmt: skip
    assert benchmark_agents.main(args) == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["args"]["algorithm_kwargs"] == ["n_steps=4", "batch_size=8", "learning_rate=0.001"]
    assert [r["name"] for r in record["results"]] == ["ppo_grid"] and "| ppo_grid | 1 |" in capsys.readouterr().out
    settings = slice(args.index("--algorithm-kwargs") + 1, args.index("--baselines"))
    bad = [*args[: settings.start], "no_such_setting=1", *args[settings.stop :]]
    with pytest.raises(SystemExit, match=r"do not fit ppo_grid"):
        benchmark_agents.main(bad)


def test_digits_preset_is_the_default_run() -> None:
    # configs/sac/digits.yaml says it is train_sac.py's defaults written out (docs/results.md relies on it), and
    # configs/sac/embedded.yaml, the photo reconstruction run, is a complete preset one flag away.
    import yaml

    from agents.config import parse_config

    run_controls = {"threads", "time_limit_min", "resume", "progress_bar"}
    every_setting = {f.name for f in dataclasses.fields(train_sac.TrainConfig)} - run_controls
    digits = SCRIPTS.parent / "configs" / "sac" / "digits.yaml"
    assert set(yaml.safe_load(digits.read_text())) == every_setting
    default = parse_config(train_sac.TrainConfig, [], "")
    assert parse_config(train_sac.TrainConfig, ["--config", str(digits)], "") == default
    assert default.env_id == "AdaGlimpse-ClutteredDigits-Fast-v0" and default.critic_search
    photos = SCRIPTS.parent / "configs" / "sac" / "embedded.yaml"
    assert set(yaml.safe_load(photos.read_text())) == every_setting
    assert parse_config(train_sac.TrainConfig, ["--config", str(photos)], "").env_id == "AdaGlimpse-Photos-v0"


def test_export_agent_writes_a_checkpoint_as_a_loadable_agent(env_args: list[str], tmp_path: Path) -> None:
    import export_agent
    import gymnasium as gym

    from agents.config import parse_key_values
    from agents.shipped import load_agent

    assert train_sac.main(sac_args(env_args, tmp_path, 32, "map")) == 0
    checkpoint = tmp_path / "checkpoints" / "model_32.zip"  # the run keeps its newest checkpoint
    assert export_agent.main([str(checkpoint), "--output", str(tmp_path / "early")]) == 0
    settings = json.loads((tmp_path / "early.json").read_text())
    assert settings["num_timesteps"] == 32 and settings["acts_with"] == "critic_search"
    assert settings["evaluation"]["timesteps"] == 32  # the run's final evaluation, at that step
    assert settings["run_config"]["total_timesteps"] == 32
    assert settings["run_config"]["symmetry_augment"]  # the default, with critic search on the map
    kwargs = parse_key_values(env_args[env_args.index("--env-kwargs") + 1 :])
    env = gym.make_vec(settings["env_id"], num_envs=2, split="val", observation="map", map_size=16, **kwargs)
    observations, _ = env.reset(seed=0)
    assert load_agent(tmp_path / "early", env).predict(observations, deterministic=True)[0].shape == (2, 3)
    env.close()
    with pytest.raises(SystemExit, match="not in a train_sac"):
        export_agent.main([str(tmp_path / "elsewhere" / "model.zip"), "--output", str(tmp_path / "x")])


def test_benchmark_agents_refuses_unknown_algorithm_kwargs_before_building() -> None:
    # The names are checked against the algorithm's constructors, so nothing is built (no env is needed) and the
    # message names the wrong argument; a setting the factory fixes itself is refused too.
    with pytest.raises(AlgorithmSettingsError, match=r"\['n_stepz'\] do not fit td3.*learning_rate"):
        algorithms.build_algorithm("td3", None, 0, "cpu", {"n_stepz": 1, "batch_size": 8})  # type: ignore[arg-type]
    for name in ("sac", "sac_search"):  # make_sac takes a CriticSearch, which no command-line value is
        with pytest.raises(AlgorithmSettingsError, match=rf"\['critic_search'\] do not fit {name}"):
            algorithms.build_algorithm(name, None, 0, "cpu", {"critic_search": 1})  # type: ignore[arg-type]
    accepted = algorithms.accepted_overrides(algorithms.ALGORITHMS["sac_search"])
    assert accepted is not None and {"float16_buffer", "gradient_steps", "target_entropy"} <= accepted
    assert not {"env", "seed", "device", "policy"} & accepted


def test_benchmark_agents_user_factory_errors_are_its_own(monkeypatch) -> None:
    # A factory that does not name its constructors is called as it is; its own TypeError is not reworded.
    def factory(env, seed, device, **overrides):
        raise TypeError(f"my_algo got an unexpected keyword argument {next(iter(overrides))!r}")

    monkeypatch.setitem(algorithms.ALGORITHMS, "my_algo", factory)
    assert algorithms.accepted_overrides(factory) is None
    with pytest.raises(TypeError, match="unexpected keyword argument 'zzz'"):
        algorithms.build_algorithm("my_algo", None, 0, "cpu", {"zzz": 1})  # type: ignore[arg-type]


def test_benchmark_agents_dqn_over_discrete_glimpses(env_args: list[str], tmp_path: Path) -> None:
    # DQN trains on the grid's indices and is evaluated, curve included, on the env's continuous glimpses.
    args = [*env_args, "observation=map", "map_size=16", "--algorithms", "dqn_grid", "--algorithm-kwargs",
            "learning_starts=4", "buffer_size=64", "batch_size=8", "gradient_steps=1",
            'policy_kwargs={"features_extractor_kwargs": {"summary_dim": 32}}', "--baselines", "--seeds",
            "0", "--timesteps", "8", "--num-envs", "2", "--eval-episodes", "2", "--eval-envs", "2",
            "--curve-every", "4", "--curve-episodes", "2", "--output", str(tmp_path / "r.json")]  # fmt: skip
    assert benchmark_agents.main(args) == 0
    (run,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert run["name"] == "dqn_grid" and [point["timesteps"] for point in run["curve"]] == [4, 8]
    assert len(run["metric_by_glimpse"]) == 3  # before any glimpse, then 2 glimpses
    with pytest.raises(AlgorithmSettingsError, match="policy_kwargs override must be a JSON object"):
        algorithms._merged_policy_kwargs({"grid": {}}, {"policy_kwargs": 3})


def test_benchmark_agents_refuses_an_override_before_any_run(env_args: list[str], monkeypatch, tmp_path: Path) -> None:
    # PPO takes n_epochs, SAC does not: the command fails before PPO's runs, not after them.
    def no_run(job):
        raise AssertionError(f"{job['name']} ran")

    monkeypatch.setattr(benchmark_agents, "run_one", no_run)
    args = [*env_args, "--algorithms", "ppo", "sac", "--algorithm-kwargs", "n_epochs=3", "--baselines",
            "--output", str(tmp_path / "r.json")]  # fmt: skip
    with pytest.raises(SystemExit, match=r"\['n_epochs'\] do not fit sac"):
        benchmark_agents.main(args)
    assert not (tmp_path / "r.json").exists()
