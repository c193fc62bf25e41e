"""Training glimpse sets: glimpses aimed at a target show it where their placement says."""

from __future__ import annotations

import pytest
import torch

from adaglimpse_env.glimpse import compute_glimpse_boxes
from adaglimpse_env.glimpse_sets import TargetPlacement, sample_glimpses, target_glimpse_actions


@pytest.mark.parametrize("placement", ["cell", "centred", "anywhere", "mixed"])
def test_target_glimpses_show_the_whole_target(placement: TargetPlacement) -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.randint(60, 164, (64, 2)).float()
    targets = torch.cat((centres - 8, centres + 8), dim=1)  # 16-px targets well inside a 224-px canvas
    unit = target_glimpse_actions(targets, 5, (2.0, 3.5), (224, 224), 2, generator, placement)
    crop = compute_glimpse_boxes(unit.reshape(-1, 3), (224, 224), 2).crop.float()  # (B * 5, 3) y x side
    crops = torch.cat((crop[:, :2], crop[:, :2] + crop[:, 2:]), dim=1)  # y1 x1 y2 x2
    repeated = targets.repeat_interleave(5, dim=0)
    middle = (crops[:, :2] + crops[:, 2:]) / 2
    inside = ((crops[:, :2] <= repeated[:, :2] + 1) & (crops[:, 2:] >= repeated[:, 2:] - 1)).all(dim=1)
    side = crop[:, 2:]
    offset = ((repeated[:, :2] + repeated[:, 2:]) / 2 - middle).abs()
    in_a_cell = ((offset - side / 4).abs() <= side / 8 + 1).all(dim=1)
    centred = (offset <= side / 16 + 1).all(dim=1)  # the cells' corner cuts the target in four
    cut = ((repeated[:, :2] < middle) & (repeated[:, 2:] > middle)).any(dim=1)
    if placement == "anywhere":  # the whole target inside, often cut across the cells
        assert inside.all() and cut.float().mean() > 0.3
    elif placement == "cell":  # the target's centre within an eighth of the side from the centre of one cell
        assert in_a_cell.all()
    elif placement == "centred":
        assert inside.all() and centred.all() and cut.all()
    else:  # each glimpse one of the three (a third each, per glimpse, not per image)
        assert (inside | in_a_cell).all()
        assert 0.2 < centred.float().mean() < 0.5 and 0.2 < in_a_cell.float().mean() < 0.6
        assert (centred.reshape(64, 5).float().mean(dim=1) % 1 != 0).any()
    with pytest.raises(ValueError, match="placement must be 'cell', 'centred', 'anywhere' or 'mixed'"):
        target_glimpse_actions(targets, 1, (2.0, 3.5), (224, 224), 2, generator, "centre")  # type: ignore[arg-type]


def test_sample_glimpses_cuts_each_set_as_the_env_does() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 64, 64)
    targets = torch.tensor([[20, 20, 36, 36]] * 3)
    patches, boxes = sample_glimpses(images, 4, 2, True, generator, targets, 1.0, (1.5, 2.0), "centred")
    assert patches.shape == (3, 16, 3, 16, 16) and boxes.shape == (3, 16, 4)
    assert (boxes[:, :4] == torch.tensor([[0, 0, 32, 32], [0, 32, 32, 64], [32, 0, 64, 32], [32, 32, 64, 64]])).all()
    # Every later glimpse is aimed at the target: its four cells meet near the target's centre (28, 28).
    corners = boxes[:, 4:].reshape(3, 3, 4, 4)[:, :, 0, 2:]  # bottom-right corner of each glimpse's first cell
    assert ((corners - 28).abs() <= 4).all()
    empty_patches, empty_boxes = sample_glimpses(images, 0, 2, True, generator)
    assert empty_patches.shape == (3, 0, 3, 16, 16) and empty_boxes.shape == (3, 0, 4)
