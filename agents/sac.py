"""The paper's SAC on stable-baselines3: hyper-parameters, learning-rate schedule and policy (original `rl_glimpse.py`
SAC).

Differences from the original that SB3 imposes, kept on purpose and documented: Adam instead of AdamW, a halved
critic loss, ``log_std`` clamped to [-20, 2] instead of a biased softplus, and no gradient updates during the
random warm-up (SB3's ``learning_starts`` does both).

:class:`GlimpseSAC` is SB3's SAC with the same update computed more cheaply, a per-phase timer for
``scripts/benchmark_sac.py`` and an optional warm-up policy; :func:`make_sac` builds it with the trunk each
observation preset takes (:mod:`agents.trunks`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3 import SAC
from stable_baselines3.common.utils import polyak_update
from stable_baselines3.common.vec_env import VecEnv

from agents.critic_search import CriticSearch
from agents.map_critic import GlimpseMapCritic, MapSACPolicy, glimpse_geometry_of, where_map_loss
from agents.replay import float16_n_step_settings
from agents.symmetry import apply_symmetries, apply_to_actions, random_symmetries
from agents.trunks import policy_setup

#: original `rl_glimpse.py` SAC (CLI defaults of the original).
PAPER_SAC: dict[str, Any] = {
    "learning_rate": 1e-3,
    "gamma": 0.99,
    "tau": 0.005,
    "batch_size": 128,
    "buffer_size": 10_000,
    "learning_starts": 10_000,
    "ent_coef": "auto_1.0",
    "target_entropy": -3.0,
    "train_freq": 1,
    "gradient_steps": 1,
}


def one_cycle_cosine(
    learning_rate: float, flat_fraction: float = 0.01, final_divisor: float = 1000.0
) -> Callable[[float], float]:
    """The original's OneCycle schedule as an SB3 schedule: flat for the first ``flat_fraction`` of training,
    then cosine-annealed to ``learning_rate / final_divisor``.

    SB3 calls it with ``progress_remaining`` going from 1 to 0.
    """

    def schedule(progress_remaining: float) -> float:
        progress = 1.0 - progress_remaining
        if progress <= flat_fraction:
            return learning_rate
        t = (progress - flat_fraction) / (1.0 - flat_fraction)
        low = learning_rate / final_divisor
        return low + 0.5 * (learning_rate - low) * (1.0 + math.cos(math.pi * min(t, 1.0)))

    return schedule


class GlimpseSAC(SAC):
    """SB3's SAC with the same update, computed with one trunk backward pass fewer.

    SB3's actor loss runs the critic on ``(obs, actor(obs))`` with gradients through the critic's features
    extractor, although those gradients are thrown away (the critic's optimiser zeroes them before its next step)
    and the features do not depend on the action. Here that features pass runs without autograd: the actor's
    gradients, every loss and every parameter are the same as SB3's (``tests/test_sac.py`` checks it update by
    update), and an update of the original trunk skips one of its three backward passes through the patch CNN.
    The critic still runs in train mode there, so its BatchNorm statistics move exactly as in SB3.

    Setting :attr:`phase_seconds` to a dict makes :meth:`train` add the wall seconds of each phase of an update to
    it (``scripts/benchmark_sac.py``); ``None`` (the default) times nothing.
    """

    phase_seconds: dict[str, float] | None = None
    #: Acts in the first ``round(warmup_share * n_envs)`` envs during the random warm-up (``learning_starts``)
    #: when set: any object with SB3's ``predict(observation)``, e.g. a baseline of :mod:`agents.baselines`. The
    #: replay buffer then starts with episodes that find something, beside uniform random ones.
    warmup_policy: Any = None
    warmup_share: float = 0.5
    #: Weight of :func:`agents.map_critic.where_map_loss` in the actor loss, with the map critic (0: plain SAC).
    where_loss_weight: float = 5.0
    #: With critic search: replay each transition under a random mirror/transpose of its map and action
    #: (:mod:`agents.symmetry`), so that the critic learns from eight views of every experience.
    symmetry_augment: bool = False

    def _excluded_save_params(self) -> list[str]:
        # The warm-up policy is a live object (it holds an env); train_sac.py sets it again on resume.
        return [*super()._excluded_save_params(), "warmup_policy", "phase_seconds"]

    def _sample_action(
        self, learning_starts: int, action_noise: Any = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """SB3's, except that during the warm-up :attr:`warmup_policy` acts in a share of the envs."""
        if self.warmup_policy is None or self.num_timesteps >= learning_starts:
            return super()._sample_action(learning_starts, action_noise, n_envs)
        actions = np.array([self.action_space.sample() for _ in range(n_envs)], dtype=np.float32)
        guided = round(self.warmup_share * n_envs)
        if guided:
            chosen, _ = self.warmup_policy.predict(self._last_obs, deterministic=True)
            actions[:guided] = np.asarray(chosen, dtype=np.float32)[:guided]
        scaled = self.policy.scale_action(actions)  # the glimpse action box is [-1, 1]: the identity
        return actions, scaled

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        """Add the wall time of the block to ``phase_seconds[name]`` when timing is on."""
        if self.phase_seconds is None:
            yield
            return
        start = time.perf_counter()
        yield
        self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + time.perf_counter() - start

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        """``gradient_steps`` SAC updates (SB3 ``SAC.train``, one features backward fewer; see the class)."""
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers += [self.ent_coef_optimizer]
        self._update_learning_rate(optimizers)
        ent_coef_losses, ent_coefs, actor_losses, critic_losses = [], [], [], []
        where_losses: list[float] = []
        assert self.replay_buffer is not None
        search = getattr(self.policy, "critic_search", None)
        for gradient_step in range(gradient_steps):
            with self._phase("replay sample + float16 decode"):
                replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
            if search is not None:
                # The policy is the critic's (agents.critic_search): no actor or entropy step, and the target
                # values the next state under that policy.
                critic_losses.append(self._critic_step(replay_data, discounts, search))
                self._target_update(gradient_step)
                continue
            if self.use_sde:
                self.actor.reset_noise()
            with self._phase("actor forward + entropy step"):
                actions_pi, log_prob = self.actor.action_log_prob(replay_data.observations)
                # The map actor's heat map for this batch (the target step's forward overwrites the trunk's copy).
                where_map = (
                    getattr(self.actor.features_extractor, "last_where_logits", None),
                    getattr(self.actor.features_extractor, "last_where", None),
                )
                log_prob = log_prob.reshape(-1, 1)
                if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
                    ent_coef = torch.exp(self.log_ent_coef.detach())
                    assert isinstance(self.target_entropy, float)
                    ent_coef_loss = -(self.log_ent_coef * (log_prob + self.target_entropy).detach()).mean()
                    ent_coef_losses.append(ent_coef_loss.item())
                    self.ent_coef_optimizer.zero_grad()
                    ent_coef_loss.backward()
                    self.ent_coef_optimizer.step()
                else:
                    ent_coef = self.ent_coef_tensor
                ent_coefs.append(ent_coef.item())

            with self._phase("target (next actor + target critics)"), torch.no_grad():
                next_actions, next_log_prob = self.actor.action_log_prob(replay_data.next_observations)
                next_q_values = torch.cat(self.critic_target(replay_data.next_observations, next_actions), dim=1)
                next_q_values, _ = torch.min(next_q_values, dim=1, keepdim=True)
                next_q_values = next_q_values - ent_coef * next_log_prob.reshape(-1, 1)
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values

            critic_losses.append(self._fit_critic(replay_data, target_q_values))

            with self._phase("actor loss + backward + step"):
                # The actor loss needs d Q / d action only: the critic's features (a function of the observation
                # alone) are computed without autograd, the Q heads with it.
                where_loss = None
                if isinstance(self.critic, GlimpseMapCritic):
                    with torch.no_grad():
                        state = self.critic.state_features(replay_data.observations)
                    q_values_pi = torch.cat(self.critic.q_values(state, actions_pi), dim=1)
                    if self.where_loss_weight > 0 and where_map[0] is not None and where_map[1] is not None:
                        where_loss = where_map_loss(where_map[0], where_map[1], self.critic, state, actions_pi)
                        where_losses.append(where_loss.item())
                else:
                    with torch.no_grad():
                        features = self.critic.extract_features(
                            replay_data.observations, self.critic.features_extractor
                        )
                    q_input = torch.cat([features, actions_pi], dim=1)
                    q_values_pi = torch.cat([q_net(q_input) for q_net in self.critic.q_networks], dim=1)
                min_qf_pi, _ = torch.min(q_values_pi, dim=1, keepdim=True)
                actor_loss = (ent_coef * log_prob - min_qf_pi).mean()
                if where_loss is not None:
                    actor_loss = actor_loss + self.where_loss_weight * where_loss
                actor_losses.append(actor_loss.item())
                self.actor.optimizer.zero_grad()
                actor_loss.backward()
                self.actor.optimizer.step()

            self._target_update(gradient_step)

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/critic_loss", np.mean(critic_losses))
        if search is not None:
            return
        self.logger.record("train/ent_coef", np.mean(ent_coefs))
        self.logger.record("train/actor_loss", np.mean(actor_losses))
        if ent_coef_losses:
            self.logger.record("train/ent_coef_loss", np.mean(ent_coef_losses))
        if where_losses:
            self.logger.record("train/where_loss", np.mean(where_losses))

    def _target_update(self, gradient_step: int) -> None:
        """SB3's Polyak update of the target critics, every ``target_update_interval`` updates."""
        if gradient_step % self.target_update_interval == 0:
            with self._phase("target update"):
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)

    def _critic_step(self, replay_data: Any, discounts: Any, search: CriticSearch) -> float:
        """One critic update towards the value of the next state under the critic-search policy; the loss."""
        assert isinstance(self.critic, GlimpseMapCritic) and isinstance(self.critic_target, GlimpseMapCritic)
        if self.symmetry_augment:
            with self._phase("symmetry augmentation"):
                replay_data = self._augmented(replay_data)
        with self._phase("target (critic search over the next state)"), torch.no_grad():
            next_values = search.next_state_value(self.critic_target, replay_data.next_observations)
            target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_values
        return self._fit_critic(replay_data, target_q_values)

    def _augmented(self, replay_data: Any) -> Any:
        """The batch with each transition's maps and action under a random symmetry (:mod:`agents.symmetry`)."""
        assert isinstance(self.critic, GlimpseMapCritic)
        observations = replay_data.observations
        height, width = self.critic.glimpse_geometry.image_size
        square = height == width and observations.shape[-1] == observations.shape[-2]
        symmetries = random_symmetries(len(observations), square, observations.device)
        return replay_data._replace(
            observations=apply_symmetries(observations, symmetries),
            next_observations=apply_symmetries(replay_data.next_observations, symmetries),
            actions=apply_to_actions(replay_data.actions, symmetries),
        )

    def _fit_critic(self, replay_data: Any, target_q_values: torch.Tensor) -> float:
        """SB3's critic step: every head towards ``target_q_values`` ``(B, 1)`` (halved MSE summed); the loss."""
        with self._phase("critic forward + backward + step"):
            current_q_values = self.critic(replay_data.observations, replay_data.actions)
            critic_loss = 0.5 * sum(F.mse_loss(current_q, target_q_values) for current_q in current_q_values)
            assert isinstance(critic_loss, torch.Tensor)
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()
        return critic_loss.item()


#: Width of the two hidden layers of each Q head of a critic-search agent (:func:`make_sac`).
SEARCH_CRITIC_WIDTH = 128


def make_sac(
    env: VecEnv,
    seed: int | None = None,
    device: str = "auto",
    tensorboard_log: str | None = None,
    float16_buffer: bool = True,
    lr_schedule: bool = True,
    spatial_critic: bool = True,
    critic_search: CriticSearch | None = None,
    verbose: int = 0,
    **overrides: Any,
) -> GlimpseSAC:
    """SAC with the paper's settings and actor/critic trunks (separate, as the original) on a glimpse env.

    Args:
        env: an SB3 ``VecEnv`` of a glimpse env (e.g. :func:`agents.sb3_adapter.make_sb3_vec_env`). The ``full``
            and ``latent`` presets get the original trunk over the streams they hold, ``flat`` SB3's MLP policy,
            ``map`` a small convolutional trunk (:mod:`agents.map_features`).
        seed: seeds SB3, the policy and the env.
        device: where the networks train.
        tensorboard_log: TensorBoard folder.
        float16_buffer: store replayed observations in float16 (half the memory; see :mod:`agents.replay`).
        lr_schedule: use the original's flat-then-cosine learning rate (else constant).
        spatial_critic: on the ``map`` preset, a critic that reads the map under the action's glimpse
            (:class:`agents.map_critic.GlimpseMapCritic`); else SB3's critic over a global feature vector.
        critic_search: on the ``map`` preset with the map critic, act by searching the critic over a grid of
            glimpses instead of with the actor (:mod:`agents.critic_search`); None: SAC's actor acts.
        verbose: SB3 verbosity.
        **overrides: any SAC argument, e.g. ``learning_starts=500``.
    """
    settings = {**PAPER_SAC, **overrides}
    if lr_schedule and not callable(settings["learning_rate"]):
        settings["learning_rate"] = one_cycle_cosine(float(settings["learning_rate"]))
    setup = policy_setup(env.observation_space, float16_buffer=float16_buffer)
    policy_kwargs = dict(setup.policy_kwargs)
    if setup.policy == "CnnPolicy" and spatial_critic:
        policy_kwargs["glimpse_geometry"] = glimpse_geometry_of(env)
        if critic_search is not None:
            policy_kwargs["critic_search"] = critic_search.to_dict()
            # The critic scores every candidate glimpse, so its heads' width sets the cost of acting and of the
            # target: 128-wide heads make updates 1.5x and acting 2.2x faster, and the README run with them (and
            # twice the updates) learnt more, not less (docs/results.md).
            policy_kwargs["net_arch"] = {"pi": list(policy_kwargs["net_arch"]), "qf": [SEARCH_CRITIC_WIDTH] * 2}
    elif critic_search is not None:
        raise ValueError(
            "critic_search needs the map critic: the 'map' observation preset (observation=map) with "
            f"spatial_critic=True; got the {setup.policy} policy with spatial_critic={spatial_critic}"
        )
    settings.setdefault("policy_kwargs", policy_kwargs)
    if setup.replay_buffer_class is not None:
        settings.setdefault("replay_buffer_class", setup.replay_buffer_class)
    # On the map, SAC's actor takes its position from a heat map over the map (agents.map_features.SpatialActor)
    # and its critic reads the map under the glimpse (agents.map_critic.GlimpseMapCritic).
    policy: Any = MapSACPolicy if setup.policy == "CnnPolicy" else setup.policy
    settings = float16_n_step_settings(settings)
    return GlimpseSAC(
        policy, env, seed=seed, device=device, tensorboard_log=tensorboard_log, verbose=verbose, **settings
    )
