"""The mean-image reference reads the env's images without building the env or its model."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import adaglimpse_env  # noqa: F401  (registers the ids)
from adaglimpse_env.envs import factory
from agents.evaluation import mean_image_rmse


def _no_model(*args: object, **kwargs: object) -> None:
    raise AssertionError("mean_image_rmse must not load a model")


def test_mean_image_rmse_loads_no_model_and_keeps_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(factory, "build_model", _no_model)
    # The value mean_image_rmse gave when it built a whole env per split (before the image stream could be made
    # without one): the same images, in the same order, with the same crops (62.0078441059036 on the first photo
    # set; 64.53922668922269 when the train split grew from 31 to 33 photos and val from 7 to 8; 58.04629887698169
    # since the GCompris photos: train 118, val 29, so another mean image and other val photos).
    assert mean_image_rmse("AdaGlimpse-Photos-v0", {}, 224, 6, 3) == pytest.approx(58.04629887698169, abs=1e-9)


def test_mean_image_rmse_scores_the_split_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(factory, "build_model", _no_model)
    heldout = mean_image_rmse("AdaGlimpse-Photos-v0", {}, 224, 4, 3, split="heldout")
    # 84.24096423712977 on the first 4 held-out photos before the jigsaw sources joined the split (83.94494855760206
    # with the 33 train photos before that); 20 held-out photos since, the first 4 of them others.
    assert heldout == pytest.approx(63.08553331957781, abs=1e-9)
    assert heldout != mean_image_rmse("AdaGlimpse-Photos-v0", {}, 224, 4, 3)


@pytest.mark.parametrize("split", ["train", "val", "heldout"])
def test_image_stream_reads_what_the_env_reads(split: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = gym.make_vec("AdaGlimpse-Photos-v0", num_envs=2, split=split)
    env_stream = env.unwrapped.stream  # type: ignore[attr-defined]
    env_stream.reseed(5)
    expected = env_stream.next_samples(3)
    env.close()
    monkeypatch.setattr(factory, "build_model", _no_model)
    stream = factory.make_image_stream("AdaGlimpse-Photos-v0", 224, seed=5, split=split)
    assert (stream.shuffle, stream.source.transform) == (env_stream.shuffle, env_stream.source.transform)
    for sample, reference in zip(stream.next_samples(3), expected, strict=True):
        assert sample["index"] == reference["index"]
        assert torch.equal(sample["image"], reference["image"])
    stream.close()
