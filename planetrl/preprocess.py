"""Image preprocessing for the world model (PlaNet, Hafner et al. 2019, Sec. 5 / App. A).

Environment frames are ``uint8`` arrays in HWC layout, ``(..., H, W, 3)``. The model consumes
float tensors in CHW layout, ``(..., 3, H, W)``, obtained by

1. quantising each pixel to ``bits`` bits: ``q = floor(x / 2**(8 - bits))``, ``q in [0, 2**bits)``;
2. scaling to ``[0, 1)``: ``q / 2**bits``;
3. adding uniform dequantisation noise ``U(0, 1 / 2**bits)`` (so the decoder sees a continuous
   density rather than ``2**bits`` spikes);
4. centring: ``- 0.5``; the result lies in ``[-0.5, 0.5)``.

:func:`postprocess` inverts this for display: ``floor(2**bits * (x + 0.5)) * 256 / 2**bits``.
For every uint8 image ``x``, ``postprocess(preprocess(x, bits), bits)`` equals the ``bits``-bit
quantised image ``floor(x / 2**(8 - bits)) * 2**(8 - bits)`` (:func:`quantise`) exactly: the noise
stays a hair (at most ``2**-22``, ~1e-4 of a 5-bit bin) below the top of its bin, so float32
rounding can never push a value into the next bin.

Speed. This runs on every training batch (50 x 50 x 64 x 64 x 3 = 30.7 M values):

* On an accelerator (any non-CPU device) the permute, float conversion and ``torch.rand`` noise are
  a handful of elementwise kernels; ``Replay.sample(device=...)`` moves the compact uint8 batch to
  the device first and preprocesses there.
* On CPU, ``torch``'s CPU random generator (a serial Mersenne Twister) alone takes ~0.1 s per
  batch, so the CPU path draws the noise bits from numpy PCG64 streams and assembles each float's
  bit pattern in integer arithmetic: mantissa = the ``bits`` quantised bits of the pixel followed
  by ``23 - bits`` random bits (2**18 evenly spaced noise levels per 5-bit bin; ``torch.rand``'s
  float32 output has 2**24 levels in [0, 1)), then one float pass subtracts 1.5. It works in
  cache-sized chunks of frames, spread over up to ``torch.get_num_threads()`` threads (numpy
  releases the GIL); the noise depends on the generator only, never on the thread count.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Union

import numpy as np
import torch

__all__ = ["GeneratorLike", "check_bits", "postprocess", "preprocess", "quantise"]

#: Anything :func:`preprocess` takes as a source of randomness.
GeneratorLike = Union[torch.Generator, np.random.Generator, None]

# The noise stays this far (in the [-0.5, 0.5) output units) below the top of each bin, which keeps
# `postprocess(preprocess(x))` exact under any float32 rounding (every bin edge is representable).
_TOP_MARGIN = 2.0**-22
# CPU path: q (bits) and the noise (23 - bits) share the 23 mantissa bits of a float32 in [1, 2).
_MANTISSA_BITS = 23
_ONE_BITS = np.uint32(0x3F800000)  # float32 1.0
# Values processed per chunk on CPU (~1 MiB of uint32): small enough for the intermediates to
# stay in cache, large enough for the per-chunk Python overhead to be negligible.
_CPU_CHUNK_ELEMENTS = 1 << 18
# Independent noise streams per call on CPU (the most threads the CPU path uses).
_NUM_LANES = 8
_POOL: ThreadPoolExecutor | None = None
_POOL_WORKERS = 0
_POOL_LOCK = threading.Lock()


def check_bits(bits: int) -> int:
    """``bits`` as an int, or ValueError unless it is an integer in 1..8."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an integer in 1..8, got {bits!r}")
    return int(bits)


def _as_uint8_images(images: torch.Tensor | np.ndarray, name: str = "images") -> torch.Tensor:
    """Validate ``images`` as uint8 ``(..., H, W, 3)`` and return it as a torch tensor (no copy)."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ValueError(
                f"{name} must be uint8 with shape (..., H, W, 3); got a numpy array of dtype "
                f"{images.dtype} and shape {images.shape}"
            )
        if not images.flags.writeable:
            # torch.from_numpy warns on read-only arrays; we never write to the input.
            images = images.copy()
        images = torch.from_numpy(images)
    elif not isinstance(images, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor or numpy.ndarray of dtype uint8 with shape "
            f"(..., H, W, 3); got {type(images).__name__}"
        )
    if images.dtype != torch.uint8:
        raise ValueError(
            f"{name} must be uint8 with shape (..., H, W, 3) (raw environment frames, HWC); got "
            f"dtype {images.dtype} and shape {tuple(images.shape)}"
        )
    if images.dim() < 3 or images.shape[-1] != 3:
        raise ValueError(
            f"{name} must have shape (..., H, W, 3) (HWC with 3 colour channels, last dim 3); got "
            f"shape {tuple(images.shape)}"
        )
    return images


def _torch_generator(generator: GeneratorLike, device: torch.device) -> torch.Generator | None:
    """A torch Generator usable on ``device``, derived reproducibly from ``generator``."""
    if generator is None:
        return None
    if isinstance(generator, torch.Generator) and generator.device.type == device.type:
        return generator
    return torch.Generator(device=device).manual_seed(_seed_from(generator))


def _check_out(out: torch.Tensor, shape: tuple[int, ...], device: torch.device) -> None:
    if (
        not isinstance(out, torch.Tensor)
        or out.dtype != torch.float32
        or tuple(out.shape) != shape
        or out.device != device
        or not out.is_contiguous()
    ):
        raise ValueError(
            f"out must be a contiguous float32 tensor of shape {shape} on {device}; got "
            + (
                f"{out.dtype} {tuple(out.shape)} on {out.device} (contiguous={out.is_contiguous()})"
                if isinstance(out, torch.Tensor)
                else type(out).__name__
            )
        )


def _cpu_workers() -> int:
    """Threads for the CPU path: as many as torch uses for its own CPU ops (at most 8)."""
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1, _NUM_LANES))


def _forget_pool_after_fork() -> None:
    # A forked child inherits the pool object but not its threads: start afresh there.
    global _POOL, _POOL_WORKERS, _POOL_LOCK
    _POOL, _POOL_WORKERS, _POOL_LOCK = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_WORKERS
    with _POOL_LOCK:
        if _POOL is None or _POOL_WORKERS != workers:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(workers, thread_name_prefix="planetrl-preprocess")
            _POOL_WORKERS = workers
        return _POOL


def _cpu_chunk(xc: np.ndarray, oc: np.ndarray, bits: int, bit_generator: Any | None) -> None:
    """One chunk of the CPU path, building the float32 bit patterns directly.

    ``xc``: uint8 ``(F, H, W, 3)``; ``oc``: float32 ``(F, 3, H, W)`` (a view into the output);
    ``bit_generator``: anything with numpy's ``random_raw`` (64 random bits per value), or None
    for no noise.

    The float32 with sign 0, exponent 127 and mantissa ``m`` (23 bits) is ``1 + m * 2**-23``. With
    ``m = q * 2**(23 - bits) + noise`` (the pixel's ``bits`` quantised bits on top, ``23 - bits``
    random bits below) that is ``1 + q / 2**bits + noise * 2**-23``; subtracting 1.5 (exact for
    values in [1, 2)) gives the result in ``[-0.5, 0.5)``. The top noise level of a bin is
    ``2**-23`` below the bin's top edge, and postprocess's ``x + 0.5`` is exact, so the round trip
    is exact. Only integer ops on cache-resident chunks plus one float pass into the output.
    """
    frames = xc.shape[0]
    v = np.empty((frames, 3, *xc.shape[1:3]), dtype=np.uint32)
    # (x & mask) = q * 2**(8 - bits): HWC -> CHW and widened in one copy.
    np.copyto(v, np.bitwise_and(xc, (0xFF << (8 - bits)) & 0xFF).transpose(0, 3, 1, 2))
    v <<= _MANTISSA_BITS - 8  # q * 2**(23 - bits)
    v |= _ONE_BITS
    if bit_generator is not None:
        n = v.size
        noise = bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n].reshape(v.shape)
        noise >>= 32 - (_MANTISSA_BITS - bits)  # the top (23 - bits) of 32 random bits
        v |= noise
    np.subtract(v.view(np.float32), np.float32(1.5), out=oc)


def _cpu_preprocess(x: torch.Tensor, out: torch.Tensor, bits: int, seed: int | None) -> None:
    """CPU path over contiguous uint8 ``(F, H, W, 3)`` into contiguous float32 ``(F, 3, H, W)``.

    Frames are processed in cache-sized chunks. Chunk ``i`` takes its noise from lane
    ``i % _NUM_LANES``, a PCG64 stream spawned from ``seed``; each lane's chunks run in order in one
    thread, so the result depends on ``seed`` only, not on the number of threads. ``seed=None``:
    no noise.
    """
    xn = x.numpy()
    on = out.numpy()
    frames, height, width, _ = xn.shape
    chunk = max(1, _CPU_CHUNK_ELEMENTS // (height * width * 3))
    starts = list(range(0, frames, chunk))
    lanes = min(_NUM_LANES, len(starts))
    if seed is None:
        streams: list[np.random.PCG64 | None] = [None] * lanes
    else:
        streams = [np.random.PCG64(s) for s in np.random.SeedSequence(seed).spawn(lanes)]

    def run_lane(lane: int) -> None:
        for start in starts[lane::lanes]:
            _cpu_chunk(xn[start : start + chunk], on[start : start + chunk], bits, streams[lane])

    workers = min(_cpu_workers(), lanes)
    if workers == 1:
        for lane in range(lanes):
            run_lane(lane)
    else:
        list(_thread_pool(workers).map(run_lane, range(lanes)))


def _seed_from(generator: GeneratorLike) -> int:
    """A 62-bit seed drawn from ``generator`` (None: torch's global RNG)."""
    if isinstance(generator, np.random.Generator):
        return int(generator.integers(0, 2**62))
    if generator is None or isinstance(generator, torch.Generator):
        return int(torch.randint(0, 2**62, (), generator=generator))
    raise TypeError(
        f"generator must be a torch.Generator, numpy.random.Generator or None, got "
        f"{type(generator).__name__}"
    )


def preprocess(
    images: torch.Tensor | np.ndarray,
    bits: int = 5,
    generator: GeneratorLike = None,
    noise: bool = True,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Turn uint8 frames ``(..., H, W, 3)`` into the model's float32 input ``(..., 3, H, W)``.

    Values are ``floor(x / 2**(8-bits)) / 2**bits + U(0, 1/2**bits) - 0.5``, in ``[-0.5, 0.5)``
    (without the noise term when ``noise=False``). The work happens on ``images.device``: move a
    uint8 batch to the GPU first to preprocess it there.

    Args:
        images: uint8 torch tensor or numpy array, shape ``(..., H, W, 3)``.
        bits: bit depth to quantise to, 1..8 (PlaNet uses 5).
        generator: source of the noise, for reproducibility: a ``torch.Generator`` (any device; one
            on another device than ``images`` only seeds a fresh one), a ``numpy.random.Generator``,
            or None for torch's global RNG.
        noise: add the uniform dequantisation noise (training); False gives bin bottoms.
        out: optional preallocated contiguous float32 tensor of the output shape on the same
            device, filled in place and returned (saves allocating ~123 MB per training batch).

    Returns:
        float32 tensor ``(..., 3, H, W)`` on ``images.device``.

    Raises:
        ValueError: ``images`` is not uint8 or its last dim is not 3; ``bits`` not in 1..8; ``out``
            has the wrong shape/dtype/device.
    """
    x = _as_uint8_images(images)
    bits = check_bits(bits)
    *lead, height, width, _ = x.shape
    shape = (*lead, 3, height, width)
    if out is None:
        out = torch.empty(shape, dtype=torch.float32, device=x.device)
    else:
        _check_out(out, shape, x.device)
    if x.numel() == 0:
        return out
    if x.device.type == "cpu":
        frames = x.reshape(-1, height, width, 3).contiguous()
        seed = _seed_from(generator) if noise else None
        _cpu_preprocess(frames, out.view(-1, 3, height, width), bits, seed)
    elif noise:
        _torch_noisy(x, out, bits, _torch_generator(generator, x.device))
    else:
        out.copy_(torch.bitwise_and(x, (0xFF << (8 - bits)) & 0xFF).movedim(-1, -3))
        out.mul_(1.0 / 256.0).sub_(0.5)
    return out


def _torch_noisy(
    x: torch.Tensor, out: torch.Tensor, bits: int, generator: torch.Generator | None
) -> None:
    """Accelerator path: ``out = U(-0.5, -0.5 + 2^-bits - margin) + q * 2^-bits``.

    ``q * 2^-bits`` (computed as ``(x & mask) / 256``) is exact and the noise's upper end
    ``-0.5 + 2^-bits - 2^-22`` is a float32 number; rounding is monotone and every bin edge is a
    float32 number, so the sum stays at or above its bin's bottom and below its top (by more than
    float32 rounding can bridge, so postprocess's ``x + 0.5`` cannot reach the next bin either).
    """
    keep_mask = (0xFF << (8 - bits)) & 0xFF
    out.uniform_(-0.5, -0.5 + 2.0**-bits - _TOP_MARGIN, generator=generator)
    out.add_(torch.bitwise_and(x, keep_mask).movedim(-1, -3), alpha=1.0 / 256.0)


def quantise(images: torch.Tensor | np.ndarray, bits: int = 5) -> torch.Tensor:
    """The ``bits``-bit quantised uint8 image ``floor(x / 2**(8-bits)) * 2**(8-bits)``, HWC.

    This is what ``postprocess(preprocess(images, bits), bits)`` reproduces exactly.
    """
    x = _as_uint8_images(images)
    bits = check_bits(bits)
    return torch.bitwise_and(x, (0xFF << (8 - bits)) & 0xFF)


def postprocess(x: torch.Tensor | np.ndarray, bits: int = 5) -> torch.Tensor:
    """Invert :func:`preprocess` for display: float ``(..., 3, H, W)`` -> uint8 ``(..., H, W, 3)``.

    Computes ``floor(2**bits * (x + 0.5)) * 256 / 2**bits`` clipped to ``[0, 255]`` (model
    reconstructions may leave ``[-0.5, 0.5)``). Runs on ``x.device``.

    Raises:
        ValueError: ``x`` is not a floating tensor/array with shape ``(..., 3, H, W)``, or ``bits``
            not in 1..8.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(
            "x must be a floating-point torch.Tensor or numpy.ndarray with shape (..., 3, H, W); "
            f"got {type(x).__name__}" + (f" of dtype {x.dtype}" if hasattr(x, "dtype") else "")
        )
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(
            f"x must have shape (..., 3, H, W) (CHW with 3 colour channels); got shape "
            f"{tuple(x.shape)}"
        )
    bits = check_bits(bits)
    levels = 2**bits
    y = torch.floor((x + 0.5) * levels) * (256 / levels)
    y = y.clamp_(0, 255).nan_to_num_(0.0)
    return y.to(torch.uint8).movedim(-3, -1).contiguous()
