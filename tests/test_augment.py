"""Random-shift augmentation of the training chunks (planetrl.augment, ``train.augment_shift``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from planetrl.augment import random_shift


@settings(max_examples=30, deadline=None)
@given(pad=st.integers(0, 4), seed=st.integers(0, 2**31 - 1))
def test_each_chunk_is_one_shift_of_its_frames_with_the_border_repeated(pad, seed):
    images = torch.randint(0, 256, (3, 4, 9, 7, 3), dtype=torch.uint8)
    shifted = random_shift(images, pad, torch.Generator().manual_seed(seed))
    assert shifted.shape == images.shape and shifted.dtype == images.dtype
    padded = torch.nn.functional.pad(
        images.permute(0, 1, 4, 2, 3).float().flatten(0, 1), (pad,) * 4, mode="replicate"
    ).unflatten(0, (3, 4))  # (B, L, C, H + 2 pad, W + 2 pad)
    for b in range(3):
        crops = [
            padded[b, :, :, dy : dy + 9, dx : dx + 7].permute(0, 2, 3, 1).to(torch.uint8)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
        ]
        # the whole chunk (all L frames) equals one crop: the same offset for every frame
        assert any(torch.equal(shifted[b], crop) for crop in crops)


def test_the_draw_follows_the_generator_and_bad_input_is_an_error():
    images = torch.randint(0, 256, (8, 2, 16, 16, 3), dtype=torch.uint8)
    a = random_shift(images, 4, torch.Generator().manual_seed(1))
    b = random_shift(images, 4, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, images)
    assert random_shift(images, 0) is images
    with pytest.raises(ValueError, match="pad must be"):
        random_shift(images, -1)
    with pytest.raises(ValueError, match=r"\(B, L, H, W, C\)"):
        random_shift(images[0], 2)


def test_a_run_trains_with_the_shift(tmp_path):
    from test_training import tiny_config

    from planetrl.training.loop import train

    config = tiny_config(tmp_path)
    config.train.augment_shift = 2
    config.loss.kl_balance = 0.8
    assert train(config, progress=False)["updates"] > 0
