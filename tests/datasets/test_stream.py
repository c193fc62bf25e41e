"""The endless seeded sample stream: order, epochs, reseeding, skipping unreadable files, worker processes."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from adaglimpse_env.datasets import ImageSource, ImageStream, TransformConfig, image_folder

NUM_FILES = 6
SMALL_TRAIN = TransformConfig(size=24, train=True)


@pytest.fixture
def good_folder(tmp_path: Path, make_image) -> Path:
    folder = tmp_path / "good"
    for i in range(NUM_FILES):
        make_image(folder / f"img{i}.jpg", size=(40, 30), seed=i)
    return folder


def indices(samples: list[dict]) -> list[int]:
    return [int(s["index"]) for s in samples]


def take(source: ImageSource, count: int, seed: int = 0, **kwargs) -> list[dict]:
    return ImageStream(source, seed=seed, **kwargs).next_samples(count)


def test_same_seed_same_order_and_images(good_folder: Path) -> None:
    source = image_folder(good_folder, transform=SMALL_TRAIN)
    a = take(source, 10, seed=3)
    b = take(source, 10, seed=3)
    assert indices(a) == indices(b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["image"], y["image"])


def test_different_seed_different_order(good_folder: Path) -> None:
    source = image_folder(good_folder, transform=SMALL_TRAIN)
    orders = {tuple(indices(take(source, 2 * NUM_FILES, seed=seed))) for seed in range(4)}
    assert len(orders) == 4


def test_shuffled_epochs_are_permutations_and_differ(good_folder: Path) -> None:
    source = image_folder(good_folder, transform=TransformConfig(size=24))
    order = indices(take(source, 4 * NUM_FILES, seed=1))
    epochs = [order[e * NUM_FILES : (e + 1) * NUM_FILES] for e in range(4)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(NUM_FILES))  # every file once per epoch
    assert len({tuple(e) for e in epochs}) > 1  # a new permutation each epoch


def test_no_shuffle_gives_file_order_and_cycles(good_folder: Path) -> None:
    source = image_folder(good_folder, transform=TransformConfig(size=24))
    samples = take(source, 2 * NUM_FILES + 3, seed=5, shuffle=False)
    assert indices(samples) == list(range(NUM_FILES)) * 2 + [0, 1, 2]
    # Sample i of the stream really is file i.
    for sample in samples[:NUM_FILES]:
        assert torch.equal(sample["image"], source[(sample["index"], 0)]["image"])


def test_consecutive_calls_continue_the_stream(good_folder: Path) -> None:
    source = image_folder(good_folder, transform=SMALL_TRAIN)
    stream = ImageStream(source, seed=7)
    pieces = stream.next_samples(4) + stream.next_samples(5) + stream.next_samples(6)
    whole = take(source, 15, seed=7)
    assert indices(pieces) == indices(whole)
    for x, y in zip(pieces, whole, strict=True):
        assert torch.equal(x["image"], y["image"])


def test_reseed_restarts(good_folder: Path) -> None:
    source = image_folder(good_folder, transform=SMALL_TRAIN)
    stream = ImageStream(source, seed=0)
    first = stream.next_samples(8)
    stream.reseed(0)
    again = stream.next_samples(8)
    assert indices(first) == indices(again)
    for x, y in zip(first, again, strict=True):
        assert torch.equal(x["image"], y["image"])
    stream.reseed(11)
    assert indices(stream.next_samples(8)) == indices(take(source, 8, seed=11))


def test_augmentation_differs_across_epochs(good_folder: Path) -> None:
    # Each visit of a file gets its own sample seed, so the same file is cropped differently in later epochs.
    source = image_folder(good_folder, transform=SMALL_TRAIN)
    samples = take(source, 3 * NUM_FILES, seed=2, shuffle=False)
    for i in range(NUM_FILES):
        visits = [samples[i + e * NUM_FILES]["image"] for e in range(3)]
        assert not (torch.equal(visits[0], visits[1]) and torch.equal(visits[1], visits[2]))


def test_corrupt_files_are_skipped_with_a_warning(tmp_path: Path, make_image, make_corrupt_files) -> None:
    folder = tmp_path / "mixed"
    for i in range(3):
        make_image(folder / f"good{i}.jpg", seed=i)
    corrupt = make_corrupt_files(folder)
    source = image_folder(folder, transform=TransformConfig(size=24))
    assert len(source) == 6
    stream = ImageStream(source, seed=0)
    with pytest.warns(RuntimeWarning, match="Skipping unreadable image") as record:
        samples = stream.next_samples(9)  # three epochs of the readable files
    assert len(samples) == 9
    for sample in samples:
        assert "error" not in sample
        assert sample["image"].shape == (3, 24, 24)
        assert source.files[sample["index"]].name.startswith("good")
    assert stream.skipped_files == {str(p) for p in corrupt}
    assert stream.num_skipped >= len(corrupt)
    # One warning per distinct file, naming it.
    runtime = [w for w in record if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == len(corrupt)
    for path in corrupt:
        assert any(path.name in str(w.message) for w in runtime)
    # The stream keeps going; files already reported are counted again but not warned about again.
    before = stream.num_skipped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        more = stream.next_samples(9)
    assert len(more) == 9
    assert stream.num_skipped > before


def test_every_file_corrupt_raises(tmp_path: Path, make_corrupt_files) -> None:
    folder = tmp_path / "broken"
    make_corrupt_files(folder)
    stream = ImageStream(image_folder(folder), seed=0)
    with (
        pytest.warns(RuntimeWarning),
        pytest.raises(RuntimeError, match=r"None of the 3 files .* could be decoded.*check the data folder"),
    ):
        stream.next_samples(1)
    assert stream.num_skipped == 3


def test_empty_source_rejected() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        ImageStream(ImageSource([]))


def test_workers_give_the_same_samples(tmp_path: Path, make_image, make_corrupt_files) -> None:
    folder = tmp_path / "mixed"
    for i in range(5):
        make_image(folder / f"good{i}.jpg", size=(40, 30), seed=i)
    make_corrupt_files(folder)
    source = image_folder(folder, transform=SMALL_TRAIN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        serial_stream = ImageStream(source, seed=4, num_workers=0)
        parallel_stream = ImageStream(source, seed=4, num_workers=2, prefetch_factor=2)
        serial = serial_stream.next_samples(12)
        parallel = parallel_stream.next_samples(12)
    assert indices(serial) == indices(parallel)
    for x, y in zip(serial, parallel, strict=True):
        assert torch.equal(x["image"], y["image"])
        assert torch.equal(x["label"], y["label"])
    assert serial_stream.num_skipped == parallel_stream.num_skipped
    assert serial_stream.skipped_files == parallel_stream.skipped_files


def test_half_corrupt_shuffled_stream_does_not_give_up(tmp_path: Path, make_image, make_corrupt_files) -> None:
    folder = tmp_path / "half"
    for i in range(3):
        make_image(folder / f"good{i}.jpg", seed=i)
    make_corrupt_files(folder)  # 3 of 6 files unreadable
    source = image_folder(folder, transform=TransformConfig(size=16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for seed in range(20):
            # Every epoch holds 3 readable files, so 60 samples must always be found.
            assert len(ImageStream(source, seed=seed).next_samples(60)) == 60


def test_close_stops_the_decoding_workers(good_folder: Path) -> None:
    stream = ImageStream(image_folder(good_folder, transform=SMALL_TRAIN), num_workers=2, prefetch_factor=2)
    first = stream.next_samples(2)
    workers = list(stream._iterator._workers)  # type: ignore[union-attr]
    assert workers and all(worker.is_alive() for worker in workers)
    stream.close()
    assert not any(worker.is_alive() for worker in workers)
    assert indices(stream.next_samples(2)) == indices(first)  # a closed stream restarts its seed's order
    stream.close()
