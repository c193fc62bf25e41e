"""Hostile actions on the single env (``gym.make``) and the vector env (``gym.make_vec``).

Bad actions must raise ``ValueError`` / ``TypeError`` whose message reads "X requires Y, got Z", raised by our
validation (no frame inside torch) and before any state changes, so the env stays usable. Finite values outside
the box are clipped and counted in ``info["num_clipped_actions"]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

NUM_ENVS = 2
REQUIRES = r"(?s)requires .+, got .+"
#: Wrong-dtype errors must also say which dtype was given.
WRONG_DTYPE = r"(?s)requires .+, got .*(dtype|object|str|complex|<U)"


@dataclass(frozen=True)
class BadAction:
    """An action that must be refused.

    Attributes:
        id: test id.
        single: the action given to the single env.
        vector: builds the action given to the vector env from ``num_envs``.
        match: regex the message must match.
    """

    id: str
    single: Any
    vector: Callable[[int], Any]
    match: str = REQUIRES


def _zeros_with(value: float, column: int) -> Callable[[int], np.ndarray]:
    def build(num_envs: int) -> np.ndarray:
        actions = np.zeros((num_envs, 3), dtype=np.float32)
        actions[-1, column] = value
        return actions

    return build


NAN = float("nan")
INF = float("inf")

BAD_ACTIONS = [
    BadAction("nan-x", [NAN, 0.0, 0.0], _zeros_with(NAN, 0), r"requires finite actions .+, got nan"),
    BadAction("+inf-y", [0.0, INF, 0.0], _zeros_with(INF, 1), r"requires finite actions .+, got inf"),
    BadAction("-inf-scale", [0.0, 0.0, -INF], _zeros_with(-INF, 2), r"requires finite actions .+, got -inf"),
    BadAction("shape-(2,)", np.zeros(2), lambda n: np.zeros(2), r"requires .*shape .+, got .*\(2,\)"),
    BadAction("shape-(n,2)", np.zeros((1, 2)), lambda n: np.zeros((n, 2)), r"requires .*shape .+, got .*, 2\)"),
    BadAction(
        "shape-(n+1,3)", np.zeros((2, 3)), lambda n: np.zeros((n + 1, 3)), r"requires .*shape .+, got .*\(\d, 3\)"
    ),
    BadAction("shape-(n,3,1)", np.zeros((1, 3, 1)), lambda n: np.zeros((n, 3, 1)), r"requires .*shape .+, got .*"),
    BadAction("scalar", 0.5, lambda n: 0.5, r"requires .*shape .+, got (shape )?\(\)"),
    BadAction("none", None, lambda n: None),
    BadAction("dict", {"x": 0.0, "y": 0.0, "scale": 0.0}, lambda n: {"x": 0.0}),
    BadAction(
        "list-of-strings", ["left", "up", "zoom"], lambda n: [["left", "up", "zoom"]] * n, r"requires .+, got .*left"
    ),
    BadAction(
        "string-array", np.array(["left", "up", "zoom"]), lambda n: np.array([["left", "up", "zoom"]] * n), WRONG_DTYPE
    ),
    BadAction(
        "numeric-strings",
        np.array(["0.1", "0.2", "0.3"]),
        lambda n: np.array([["0.1", "0.2", "0.3"]] * n),
        WRONG_DTYPE,
    ),
    BadAction(
        "object-array-of-floats",
        np.array([0.1, 0.2, 0.3], dtype=object),
        lambda n: np.zeros((n, 3)).astype(object),
        WRONG_DTYPE,
    ),
    BadAction(
        "object-array-of-none",
        np.array([None, None, None], dtype=object),
        lambda n: np.full((n, 3), None, dtype=object),
        WRONG_DTYPE,
    ),
    BadAction(
        "complex",
        np.array([0.1 + 0.5j, 0.0, 0.0]),
        lambda n: np.full((n, 3), 0.1 + 0.5j),
        WRONG_DTYPE,
    ),
    BadAction(
        "python-int-overflow",
        [10**400, 0, 0],
        lambda n: [[10**400, 0, 0]] * n,
        WRONG_DTYPE,
    ),
    BadAction(
        "torch-tensor-nan",
        torch.tensor([NAN, 0.0, 0.0]),
        lambda n: torch.from_numpy(_zeros_with(NAN, 0)(n)),
        r"requires finite actions .+, got nan",
    ),
    BadAction("torch-tensor-shape-(n,2)", torch.zeros(1, 2), lambda n: torch.zeros(n, 2), r"requires .*shape .+, got"),
    BadAction("ragged-list", [[0.0, 0.0], [0.0]], lambda n: [[0.0, 0.0, 0.0]] * (n - 1) + [[0.0]]),
]


BAD_ACTION_PARAMS = [pytest.param(case, id=case.id) for case in BAD_ACTIONS]


def assert_not_from_torch(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    frames = [str(entry.path) for entry in excinfo.traceback]
    assert not any("/torch/" in frame for frame in frames), frames[-3:]


@pytest.fixture(scope="module")
def _single_env(good_folder, make_folder_env):
    env = make_folder_env(good_folder)
    yield env
    env.close()


@pytest.fixture(scope="module")
def _vector_env(good_folder, make_folder_vec_env):
    envs = make_folder_vec_env(good_folder, num_envs=NUM_ENVS)
    yield envs
    envs.close()


@pytest.fixture
def single_env(_single_env):
    """``gym.make`` of the folder id (with Gymnasium's wrappers), freshly reset: one env for the whole module."""
    _single_env.reset(seed=0)
    return _single_env


@pytest.fixture
def vector_env(_vector_env):
    """``gym.make_vec`` of the folder id with 2 envs, freshly reset."""
    _vector_env.reset(seed=0)
    return _vector_env


# ------------------------------------------------------------------------------------------ refused
@pytest.mark.parametrize("case", BAD_ACTION_PARAMS)
def test_bad_action_refused_by_single_env(single_env, case: BadAction) -> None:
    with pytest.raises((ValueError, TypeError), match=case.match) as excinfo:
        single_env.step(case.single)
    assert_not_from_torch(excinfo)
    # Refused before any state changed: the episode goes on from where it was.
    _, _, _, _, info = single_env.step(np.zeros(3, dtype=np.float32))
    assert info["num_glimpses"] == 1


@pytest.mark.parametrize("case", BAD_ACTION_PARAMS)
def test_bad_action_refused_by_vector_env(vector_env, case: BadAction) -> None:
    with pytest.raises((ValueError, TypeError), match=case.match) as excinfo:
        vector_env.step(case.vector(NUM_ENVS))
    assert_not_from_torch(excinfo)
    _, _, _, _, info = vector_env.step(np.zeros((NUM_ENVS, 3), dtype=np.float32))
    assert info["num_glimpses"].tolist() == [1] * NUM_ENVS


# ------------------------------------------------------------------------------------------ accepted
ACCEPTED = [
    pytest.param([0.25, -0.5, 0.1], id="python-list"),
    pytest.param((0.25, -0.5, 0.1), id="tuple"),
    pytest.param(np.array([0.25, -0.5, 0.1], dtype=np.float16), id="float16"),
    pytest.param(np.array([1, 0, -1], dtype=np.int64), id="int64-in-range"),
    pytest.param(torch.tensor([0.25, -0.5, 0.1]), id="torch-tensor"),
]


def glimpse_after(env: Any, action: Any) -> tuple[np.ndarray, int]:
    env.reset(seed=0)
    _, _, _, _, info = env.step(action)
    return info["glimpse_boxes"][0], info["num_clipped_actions"]


@pytest.mark.parametrize("action", ACCEPTED)
def test_plain_python_and_numeric_actions_equal_their_float32_array(single_env, action: Any) -> None:
    reference = glimpse_after(single_env, np.asarray(action, dtype=np.float32))
    boxes, clipped = glimpse_after(single_env, action)
    np.testing.assert_array_equal(boxes, reference[0])
    assert clipped == 0


def test_nested_python_list_on_the_vector_env(vector_env) -> None:
    actions = [[0.25, -0.5, 0.1], [-1, 1, 0]]
    vector_env.reset(seed=0)
    _, _, _, _, from_list = vector_env.step(actions)
    vector_env.reset(seed=0)
    _, _, _, _, from_array = vector_env.step(np.array(actions, dtype=np.float32))
    np.testing.assert_array_equal(from_list["glimpse_boxes"], from_array["glimpse_boxes"])


OUT_OF_RANGE = [
    pytest.param([2.0, -3.0, 0.5], [1.0, -1.0, 0.5], id="small-overshoot"),
    pytest.param([1e30, 0.0, -1e30], [1.0, 0.0, -1.0], id="1e30"),
    pytest.param(
        [np.finfo(np.float64).max, 0.0, -np.finfo(np.float64).max], [1.0, 0.0, -1.0], id="float64-max-beyond-float32"
    ),
    pytest.param(np.array([0.0, 1.0001, 0.0], dtype=np.float32), [0.0, 1.0, 0.0], id="just-above-1"),
    pytest.param(torch.tensor([-7.0, 0.5, 3.0]), [-1.0, 0.5, 1.0], id="torch-tensor"),
]


@pytest.mark.parametrize(("action", "clipped_to"), OUT_OF_RANGE)
def test_out_of_range_action_is_clipped_and_counted_by_single_env(single_env, action, clipped_to) -> None:
    reference_boxes, _ = glimpse_after(single_env, np.asarray(clipped_to, dtype=np.float32))
    boxes, clipped = glimpse_after(single_env, action)
    np.testing.assert_array_equal(boxes, reference_boxes)
    assert clipped == 1
    _, _, _, _, info = single_env.step([0.0, 0.0, 0.0])  # in range: not counted
    assert info["num_clipped_actions"] == 1


@pytest.mark.parametrize(("action", "clipped_to"), OUT_OF_RANGE)
def test_out_of_range_action_is_clipped_and_counted_per_env_by_vector_env(vector_env, action, clipped_to) -> None:
    vector_env.reset(seed=0)
    _, _, _, _, reference = vector_env.step(np.array([clipped_to, [0.0, 0.0, 0.0]], dtype=np.float32))
    vector_env.reset(seed=0)
    if isinstance(action, torch.Tensor):
        actions: Any = torch.stack((action, torch.zeros(3)))
    else:
        actions = [np.asarray(action, dtype=np.float64).tolist(), [0.0, 0.0, 0.0]]
    _, _, _, _, info = vector_env.step(actions)
    np.testing.assert_array_equal(info["glimpse_boxes"], reference["glimpse_boxes"])
    assert info["num_clipped_actions"].tolist() == [1, 0]
