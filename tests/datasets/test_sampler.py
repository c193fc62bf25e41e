"""SeededOrder, the one sampler of the env's image stream and of pretraining: the pairs it always gave."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from adaglimpse_env.datasets import ImageStream, SeededOrder, image_folder

# The first pairs of the env stream's sampler before it became SeededOrder (adaglimpse_env/datasets/stream.py
# _SeededOrder at commit 8baee6e): the same seeds must keep giving the same images and crops.
BEFORE_SHUFFLED = [(4, 2100730120), (2, 543856842), (1, 1243875292), (3, 874449309), (0, 1659216627),
                   (3, 733081299), (1, 323855431), (4, 917931950), (0, 1814323241), (2, 1156981196),
                   (2, 1207819407), (1, 1946783671)]  # fmt: skip
BEFORE_IN_ORDER = [(0, 1121323793), (1, 1910699504), (2, 2132340197), (0, 1196444851), (1, 650573022),
                   (2, 1719937019), (0, 491113666)]  # fmt: skip


def test_same_pairs_as_before() -> None:
    assert list(itertools.islice(SeededOrder(5, 3, shuffle=True), 12)) == BEFORE_SHUFFLED
    assert list(itertools.islice(SeededOrder(3, 0, shuffle=False), 7)) == BEFORE_IN_ORDER


@pytest.mark.parametrize("start", [0, 1, 4, 5, 6, 13])
def test_start_continues_the_uninterrupted_sequence(start: int) -> None:
    whole = list(itertools.islice(SeededOrder(5, 7), start + 9))
    assert list(itertools.islice(SeededOrder(5, 7, start=start), 9)) == whole[start:]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one file"):
        SeededOrder(0, 0)
    with pytest.raises(ValueError, match="start >= 0"):
        SeededOrder(3, 0, start=-1)


def test_the_stream_reads_in_sampler_order(tmp_path: Path, make_image) -> None:
    for i in range(4):
        make_image(tmp_path / f"img{i}.jpg", size=(40, 30), seed=i)
    source = image_folder(tmp_path)
    stream = ImageStream(source, shuffle=True, seed=11)
    indices = [sample["index"] for sample in stream.next_samples(2 * len(source))]
    expected = [index for index, _ in itertools.islice(SeededOrder(len(source), 11), 2 * len(source))]
    assert indices == expected
