"""Tests for planetrl.preprocess: 5-bit quantisation, dequantisation noise, and its inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from planetrl import preprocess as pp
from planetrl.preprocess import postprocess, preprocess, quantise


def quantised_reference(x: np.ndarray, bits: int) -> np.ndarray:
    """floor(x / 2**(8-bits)) * 2**(8-bits), computed independently of the module."""
    step = 2 ** (8 - bits)
    return ((x.astype(np.int64) // step) * step).astype(np.uint8)


def all_values_image(repeats: int = 4) -> np.ndarray:
    """A (repeats, 16, 16, 3) image holding every uint8 value in every channel."""
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    return np.broadcast_to(values[None, :, :, None], (repeats, 16, 16, 3)).copy()


image_shapes = st.tuples(
    st.integers(0, 2), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)
).map(lambda s: (s[0], s[1], s[2], s[3], 3) if s[0] else (s[1], s[2], s[3], 3))


@settings(max_examples=60, deadline=None)
@given(
    x=image_shapes.flatmap(lambda shape: arrays(np.uint8, shape)),
    bits=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_is_exact_quantisation(x: np.ndarray, bits: int, seed: int) -> None:
    y = preprocess(torch.from_numpy(x), bits, generator=torch.Generator().manual_seed(seed))
    assert y.dtype == torch.float32
    assert y.shape == (*x.shape[:-3], 3, x.shape[-3], x.shape[-2])
    assert torch.all(y >= -0.5) and torch.all(y < 0.5)
    back = postprocess(y, bits)
    assert back.dtype == torch.uint8 and back.shape == x.shape
    np.testing.assert_array_equal(back.numpy(), quantised_reference(x, bits))
    np.testing.assert_array_equal(quantise(x, bits).numpy(), quantised_reference(x, bits))


@pytest.mark.parametrize("bits", range(1, 9))
def test_range_noise_bounds_and_mean(bits: int) -> None:
    x = all_values_image(repeats=8)
    y = preprocess(x, bits, generator=torch.Generator().manual_seed(bits))
    clean = preprocess(x, bits, noise=False)
    assert float(y.min()) >= -0.5 and float(y.max()) < 0.5
    # noise=False gives exactly the bottom of each bin: q / 2**bits - 0.5.
    q = torch.from_numpy(x.astype(np.int64) >> (8 - bits)).movedim(-1, -3)
    torch.testing.assert_close(clean, q.float() / 2**bits - 0.5, rtol=0, atol=0)
    # The noise is U(0, 1/2**bits): inside the bin, mean at the bin centre, std width/sqrt(12).
    noise = (y - clean) * 2**bits  # in bin widths
    assert float(noise.min()) >= 0.0 and float(noise.max()) < 1.0
    assert abs(float(noise.mean()) - 0.5) < 0.02
    assert abs(float(noise.std()) - 12**-0.5) < 0.02
    # Roughly uniform: each tenth of the bin gets about a tenth of the values.
    counts = torch.histc(noise, bins=10, min=0.0, max=1.0)
    assert torch.all((counts / noise.numel() - 0.1).abs() < 0.02)
    # The noise is independent across pixels (not one value per bin).
    assert noise.unique().numel() > noise.numel() // 2


def test_extreme_noise_keeps_bins_on_cpu_path() -> None:
    """All-ones / all-zeros random bits give the top / bottom noise level: still inside the bin."""

    class FixedBits:
        def __init__(self, value: int) -> None:
            self.value = value

        def random_raw(self, size: int) -> np.ndarray:
            return np.full(size, self.value, dtype=np.uint64)

    x = torch.from_numpy(all_values_image(repeats=2))
    for bits in range(1, 9):
        for value, expect in ((2**64 - 1, "top"), (0, "bottom")):
            out = torch.empty(2, 3, 16, 16)
            pp._cpu_chunk(x.numpy(), out.numpy(), bits, FixedBits(value))
            assert float(out.max()) < 0.5 and float(out.min()) >= -0.5
            np.testing.assert_array_equal(
                postprocess(out, bits).numpy(), quantised_reference(x.numpy(), bits)
            )
            clean = preprocess(x, bits, noise=False)
            if expect == "bottom":
                torch.testing.assert_close(out, clean, rtol=0, atol=0)
            else:
                assert float(((out - clean) * 2**bits).min()) > 0.999


def test_extreme_noise_keeps_bins_on_accelerator_path() -> None:
    """The device path (run here on CPU tensors) at its noise bounds stays inside each bin."""
    x = torch.from_numpy(all_values_image(repeats=2))
    for bits in range(1, 9):
        out = torch.empty(2, 3, 16, 16)
        pp._torch_noisy(x, out, bits, torch.Generator().manual_seed(0))
        np.testing.assert_array_equal(
            postprocess(out, bits).numpy(), quantised_reference(x.numpy(), bits)
        )
        # The largest value uniform_ can return, added to every bin bottom.
        top = torch.tensor(-0.5 + 2.0**-bits - pp._TOP_MARGIN, dtype=torch.float32)
        levels = torch.arange(2**bits, dtype=torch.float32) / 2**bits
        values = top + levels
        assert float(values.max()) < 0.5
        np.testing.assert_array_equal(
            torch.floor((values + 0.5) * 2**bits).numpy(), np.arange(2**bits)
        )


def test_numpy_input_and_generators_are_reproducible() -> None:
    x = all_values_image(repeats=1)
    a = preprocess(x, generator=torch.Generator().manual_seed(3))
    b = preprocess(torch.from_numpy(x), generator=torch.Generator().manual_seed(3))
    c = preprocess(x, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    d = preprocess(x, generator=np.random.default_rng(5))
    e = preprocess(x, generator=np.random.default_rng(5))
    torch.testing.assert_close(d, e, rtol=0, atol=0)
    torch.manual_seed(7)
    f = preprocess(x)
    torch.manual_seed(7)
    g = preprocess(x)
    torch.testing.assert_close(f, g, rtol=0, atol=0)
    readonly = x.copy()
    readonly.flags.writeable = False
    assert preprocess(readonly, noise=False).shape == (1, 3, 16, 16)


def test_cpu_noise_does_not_depend_on_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(0).integers(0, 256, (70, 16, 16, 3), dtype=np.uint8)
    monkeypatch.setattr(pp, "_CPU_CHUNK_ELEMENTS", 16 * 16 * 3 * 4)  # 18 chunks over 8 lanes
    results = []
    for workers in (1, 2, 3):
        monkeypatch.setattr(pp, "_cpu_workers", lambda workers=workers: workers)
        results.append(preprocess(x, generator=np.random.default_rng(1)))
    for other in results[1:]:
        torch.testing.assert_close(results[0], other, rtol=0, atol=0)
    np.testing.assert_array_equal(postprocess(results[0]).numpy(), quantised_reference(x, 5))


def test_non_contiguous_input_out_and_empty() -> None:
    x = torch.from_numpy(all_values_image(repeats=3))
    strided = x.flip(1)[:, ::2]
    y = preprocess(strided, noise=False)
    torch.testing.assert_close(y, preprocess(strided.contiguous(), noise=False), rtol=0, atol=0)
    out = torch.full((3, 3, 16, 16), 7.0)
    result = preprocess(x, out=out, generator=torch.Generator().manual_seed(0))
    assert result is out and float(out.max()) < 0.5
    with pytest.raises(ValueError, match="out must be a contiguous float32 tensor of shape"):
        preprocess(x, out=torch.empty(3, 16, 16, 3))
    assert preprocess(torch.zeros(0, 8, 8, 3, dtype=torch.uint8)).shape == (0, 3, 8, 8)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 4, 4, 3), np.float32), "must be uint8 with shape"),
        (torch.zeros(2, 4, 4, 3), "must be uint8 with shape"),
        (torch.zeros(2, 4, 4, 4, dtype=torch.uint8), r"\(\.\.\., H, W, 3\)"),
        (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), r"last dim 3"),
        (torch.zeros(4, 3, dtype=torch.uint8), r"\(\.\.\., H, W, 3\)"),
        ([[[[0, 0, 0]]]], "torch.Tensor or numpy.ndarray of dtype uint8"),
    ],
)
def test_bad_images_raise_value_error(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        preprocess(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bits", [0, 9, -1, 2.5, True])
def test_bad_bits_raise_value_error(bits: object) -> None:
    x = torch.zeros(1, 2, 2, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="bits must be an integer in 1..8"):
        preprocess(x, bits)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bits must be an integer in 1..8"):
        postprocess(torch.zeros(1, 3, 2, 2), bits)  # type: ignore[arg-type]


def test_postprocess_validates_and_clips() -> None:
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\)"):
        postprocess(torch.zeros(2, 4, 4, 3))
    with pytest.raises(ValueError, match="floating-point"):
        postprocess(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
    x = torch.tensor([-3.0, -0.5, 0.49, 0.5, 7.0, float("nan")]).view(1, 1, 6).expand(3, 1, 6)
    out = postprocess(x, 5)
    assert out.shape == (1, 6, 3)
    assert out[0, :, 0].tolist() == [0, 0, 248, 255, 255, 0]
    assert postprocess(np.zeros((3, 2, 2), np.float32)).dtype == torch.uint8


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_cpu_path_works_in_a_forked_child(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(pp, "_cpu_workers", lambda: 2)  # 3 chunks on 2 threads: uses the pool
    x = np.random.default_rng(0).integers(0, 256, (50, 64, 64, 3), dtype=np.uint8)
    expected = preprocess(x, generator=np.random.default_rng(1))  # creates the thread pool
    pid = os.fork()
    if pid == 0:  # child: must not deadlock on the parent's (thread-less) pool
        try:  # (compare with numpy: torch's own OpenMP ops may hang in a forked child)
            got = preprocess(x, generator=np.random.default_rng(1))
            os._exit(0 if np.array_equal(got.numpy(), expected.numpy()) else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
