"""The world model's update: one gradient step of the ELBO on a replay batch, eager or captured.

:func:`gradient_step` is the readable eager step (paper Algorithm 1, "update the model"):

    x = preprocess(shift(o_{1:L}))              (the frames as the model sees them)
    loss = -ELBO(x, a, r)                          (planetrl.objective.compute_loss)
    g = clip(grad loss, train.grad_clip);  θ <- Adam(θ, g)

:class:`GraphedUpdate` is the same step on static buffers, captured as two CUDA graphs (the
``speed.update_graph`` fast path): graph 1 runs the forward pass, the losses (overshooting
included), backward and the clipping; the host reads the loss terms (the one sync per step, which
the eager step has too) and checks them; graph 2 runs Adam (``capturable=True``, its step count on
the device). So a non-finite loss stops the run before any parameter moved, as eagerly. What draws
from the run's CPU generator (the random shift, the dequantisation noise) runs before the graphs,
on the same generator in the same order as the eager step; the posterior samples inside the graph
come from the device's default CUDA generator (graph-safe through its philox offsets), a different
stream of the same distribution. Without capture (``use_graphs=False``, or a CPU device) the very
same static-buffer code runs eagerly, which is what the CPU tests check.

Launch-bound, not compute-bound: on an H200 the eager B=50 x L=50 step of the paper preset took
92 ms for ~15 ms of arithmetic (docs/benchmarks.md), thousands of small kernels (a GRU step per t,
overshooting's rollouts, Adam per parameter). One graph replay launches them all at once.

:class:`BatchPrefetcher` samples the next batches in a background thread (into pinned memory for a
CUDA device), exactly the C batches of an update phase in the order the replay's generator gives
them, so the batches and the replay's random stream are those of sampling in the loop.
"""

from __future__ import annotations

import math
import queue
import threading
from dataclasses import asdict, fields, replace
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from planetrl.augment import random_shift
from planetrl.models.base import capturing
from planetrl.objective import compute_loss


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; the last good checkpoint is kept."""


def prepare_batch(world_model: Any, batch: Any, config: Any, generator: torch.Generator) -> Any:
    """``batch`` as the model's input: the frames shifted (``train.augment_shift``,
    :func:`planetrl.augment.random_shift`) and preprocessed (``world_model.preprocess``: 5-bit,
    dequantisation noise, centred), both drawn with ``generator`` in that order. A float image
    is taken as already prepared."""
    image = batch.image
    if image.dtype != torch.uint8:
        return batch
    if config.train.augment_shift:
        image = random_shift(image, config.train.augment_shift, generator)
    return replace(batch, image=world_model.preprocess(image, generator))


def _raise_non_finite(values: dict[str, float], loss_finite: bool, where: str, keep: str) -> None:
    bad = [k for k, v in values.items() if k != "grad_norm" and not math.isfinite(v)]
    if bad or not loss_finite:
        raise NonFiniteLossError(
            f"non-finite loss at {where}: "
            f"{', '.join(f'{k}={values[k]}' for k in bad) or 'loss'}; stopped, {keep}"
        )
    if not math.isfinite(values.get("grad_norm", 0.0)):
        raise NonFiniteLossError(f"non-finite gradient norm at {where}; stopped, {keep}")


def gradient_step(
    world_model: Any,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    config: Any,
    generator: torch.Generator,
    *,
    where: str = "update",
    keep: str = "stopped",
) -> dict[str, float]:
    """One gradient step of the ELBO (``config.loss``) on a replay ``batch``: the loss and its
    terms, backward, the gradient norm clipped to ``train.grad_clip``, Adam's step. Returns the
    terms as floats and ``grad_norm``. A non-finite term or gradient norm is a
    :class:`NonFiniteLossError` naming ``where`` and what was kept (``keep``), before any
    parameter moved. The frames are prepared first (:func:`prepare_batch`, with
    ``generator``)."""
    batch = prepare_batch(world_model, batch, config, generator)
    loss, metrics, _ = compute_loss(world_model, batch, **asdict(config.loss))
    values = {k: float(v) for k, v in metrics.items()}
    _raise_non_finite(values, bool(torch.isfinite(loss)), where, keep)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(world_model.parameters(), config.train.grad_clip)
    values["grad_norm"] = float(grad_norm)
    _raise_non_finite(values, True, where, keep)
    optimizer.step()
    return values


def set_capturable(optimizer: torch.optim.Optimizer, on: bool, device: torch.device) -> None:
    """Adam's ``capturable`` flag for every group: on, its step counts move to ``device`` (so
    that its step can be captured); off, to the CPU, where the eager Adam reads them (e.g. a
    state saved by a captured run, resumed eagerly)."""
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = on
    where = device if on else torch.device("cpu")  # off: no host sync per parameter and step
    for state in optimizer.state.values():
        if "step" in state and isinstance(state["step"], Tensor):
            state["step"] = state["step"].to(device=where, dtype=torch.float32)


def _static_copy(batch: Any) -> Any:
    """A Batch of fresh tensors holding ``batch``'s values (the graphs' input buffers)."""
    out = {}
    for f in fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, dict):
            out[f.name] = {k: v.detach().clone() for k, v in value.items()}
        else:
            out[f.name] = value.detach().clone()
    return type(batch)(**out)


def _copy_into(static: Any, batch: Any) -> None:
    for f in fields(static):
        target, value = getattr(static, f.name), getattr(batch, f.name)
        if isinstance(target, dict):
            if set(target) != set(value):
                raise ValueError(
                    f"batch.{f.name} has keys {sorted(value)}, the captured update {sorted(target)}"
                )
            for k in target:
                target[k].copy_(value[k], non_blocking=True)
        else:
            if tuple(target.shape) != tuple(value.shape):
                raise ValueError(
                    f"batch.{f.name} is {tuple(value.shape)}; the captured update was built for "
                    f"{tuple(target.shape)} (one B x L per run)"
                )
            target.copy_(value, non_blocking=True)


class GraphedUpdate:
    """:func:`gradient_step` on static buffers, as two CUDA graphs (see the module docstring).

    The first ``warmup`` calls are eager steps on their own batches (on a side stream: cuBLAS
    handles, Adam's state, the autograd streams settle); the next call captures the graphs on its
    batch and replays them; every later call copies its batch into the static buffers and
    replays. Graph capture that fails falls back to the eager step for the rest of the run, the
    reason in :attr:`fallback`. ``use_graphs=False`` or a CPU device: the static-buffer code
    eagerly (the same function; what the CPU tests check). Changing the set of trained
    parameters, the optimiser's groups or B x L after the capture needs a new object.
    """

    def __init__(
        self,
        world_model: Any,
        optimizer: torch.optim.Optimizer,
        config: Any,
        *,
        use_graphs: bool = True,
        warmup: int = 3,
    ) -> None:
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(
                f"warmup must be an int >= 1 (Adam's state must exist before the capture), "
                f"got {warmup!r}"
            )
        self.world_model, self.optimizer, self.config = world_model, optimizer, config
        self.device = next(world_model.parameters()).device
        self.use_graphs = use_graphs and self.device.type == "cuda"
        self.warmup = warmup
        self.fallback: str | None = None
        self.calls = 0
        self._static: Any = None
        self._keys: list[str] = []
        self._graphs: tuple[Any, Any] | None = None
        self._values: Tensor | None = None
        self._stream: Any = None

    @property
    def captured(self) -> bool:
        return self._graphs is not None

    def describe(self) -> str:
        """Which update runs: eager after a fallback, captured, to be captured, or the
        static-buffer code without capture."""
        if self.fallback:
            return f"eager ({self.fallback})"
        if self.captured:
            return "captured (two CUDA graphs)"
        if self.use_graphs:
            return f"to be captured after {self.warmup} eager steps"
        return "static buffers, no capture"

    def __call__(
        self,
        batch: Any,
        generator: torch.Generator,
        *,
        where: str = "update",
        keep: str = "stopped",
    ) -> dict[str, float]:
        wm, cfg = self.world_model, self.config
        self.calls += 1
        if self.fallback is not None:
            return gradient_step(wm, self.optimizer, batch, cfg, generator, where=where, keep=keep)
        prepared = prepare_batch(wm, batch, cfg, generator)
        if self.use_graphs and self.calls <= self.warmup:
            side = self._side_stream()
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                values = gradient_step(
                    wm, self.optimizer, prepared, cfg, generator, where=where, keep=keep
                )
            torch.cuda.current_stream(self.device).wait_stream(side)
            return values
        if self._static is None:
            self._static = _static_copy(prepared)
            if self.use_graphs:
                try:
                    self._capture()
                except Exception as err:  # noqa: BLE001 - any capture failure: eager from now on
                    # Best effort: a capture that broke the CUDA context itself cannot be undone.
                    self.fallback = f"capture failed ({type(err).__name__}: {err}): eager update"
                    self._graphs = self._values = self._static = None
                    set_capturable(self.optimizer, False, self.device)
                    self.optimizer.zero_grad(set_to_none=True)
                    return gradient_step(
                        wm, self.optimizer, prepared, cfg, generator, where=where, keep=keep
                    )
        else:
            _copy_into(self._static, prepared)
        if self._graphs is None:  # no capture: the same two stages, eagerly
            values_t, loss_finite = self._forward_backward()
            values = dict(zip(self._keys, values_t.tolist()))
            _raise_non_finite(values, loss_finite, where, keep)
            self.optimizer.step()
            return values
        forward, step = self._graphs
        forward.replay()
        assert self._values is not None
        values = dict(zip(self._keys, self._values.tolist()))  # the one host sync
        _raise_non_finite(values, math.isfinite(values["loss"]), where, keep)
        step.replay()
        return values

    def _forward_backward(self) -> tuple[Tensor, bool]:
        """Stage 1 on the static batch: losses, backward, clipping; (the terms and the gradient
        norm as one tensor, in :attr:`_keys` order; whether the loss is finite)."""
        wm = self.world_model
        if not capturing(self.device):
            self.optimizer.zero_grad(set_to_none=True)
        loss, metrics, _ = compute_loss(wm, self._static, **asdict(self.config.loss))
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(wm.parameters(), self.config.train.grad_clip)
        self._keys = [*metrics, "grad_norm"]
        values = torch.stack([*(v.float() for v in metrics.values()), grad_norm.float()])
        return values, True if capturing(self.device) else bool(torch.isfinite(loss))

    def _side_stream(self) -> Any:
        """The one stream of the warm-up steps and of the capture: cuBLAS handles and
        workspaces are per stream, so the capture finds them made (none created mid-capture)."""
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        return self._stream

    def _capture(self) -> None:
        device = self.device
        set_capturable(self.optimizer, True, device)  # Adam's state exists (the warm-up steps)
        # Gradients are allocated by the captured backward from the graph's private pool and stay
        # at those addresses: the optimiser's graph reads them there.
        self.optimizer.zero_grad(set_to_none=True)
        forward, step = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        side = self._side_stream()
        current = torch.cuda.current_stream(device)
        torch.cuda.synchronize(device)
        # thread_local: the batch prefetcher's thread keeps pinning memory during the capture.
        try:
            with torch.cuda.graph(forward, stream=side, capture_error_mode="thread_local"):
                self._values, _ = self._forward_backward()
            with torch.cuda.graph(
                step, pool=forward.pool(), stream=side, capture_error_mode="thread_local"
            ):
                self.optimizer.step()
        finally:
            torch.cuda.set_stream(current)  # also when a failed capture left the side stream on
        self._graphs = (forward, step)


def make_update(
    world_model: Any, optimizer: torch.optim.Optimizer, config: Any, fast: Any
) -> Callable[..., dict[str, float]]:
    """The update a run uses: :class:`GraphedUpdate` where ``fast.update_graph`` is on and the
    model is on a CUDA device, else :func:`gradient_step` with these arguments bound."""
    device = next(world_model.parameters()).device
    if getattr(fast, "update_graph", False) and device.type == "cuda":
        return GraphedUpdate(world_model, optimizer, config)
    set_capturable(optimizer, False, device)  # e.g. a state saved by a captured run

    def eager(batch: Any, generator: torch.Generator, **kwargs: Any) -> dict[str, float]:
        return gradient_step(world_model, optimizer, batch, config, generator, **kwargs)

    return eager


class BatchPrefetcher:
    """``count`` batches from ``sample()``, drawn ahead in a background thread (at most ``depth``
    waiting), each moved to ``device`` by the consumer; pinned first when ``device`` is CUDA, so
    the copy is asynchronous. The batches come in the order ``sample`` made them: the same
    batches, and the same state of the sampler's generator after all ``count``, as calling it
    ``count`` times in the loop. An exception in ``sample`` is raised by the iteration that would
    have returned its batch. Use as a context manager (the thread stops on exit)::

        with BatchPrefetcher(lambda: replay.sample(B, L), C, device) as batches:
            for batch in batches:
                update(batch)
    """

    def __init__(
        self,
        sample: Callable[[], Any],
        count: int,
        device: torch.device | str = "cpu",
        depth: int = 2,
    ) -> None:
        if count < 0 or depth < 1:
            raise ValueError(f"count must be >= 0 and depth >= 1, got {count}, {depth}")
        self.sample, self.count, self.device = sample, count, torch.device(device)
        self.pin = self.device.type == "cuda"
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="batch-prefetch", daemon=True)

    def _work(self) -> None:
        for _ in range(self.count):
            if self._stop.is_set():
                return
            try:
                batch = self.sample()
                if self.pin:
                    batch = _map_tensors(batch, lambda t: t.pin_memory())
                item: tuple[str, Any] = ("batch", batch)
            except BaseException as err:  # noqa: BLE001 - handed to the consumer
                item = ("error", err)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[0] == "error":
                return

    def __enter__(self) -> Iterator[Any]:
        self._thread.start()
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        for _ in range(self.count):
            kind, value = self._queue.get()
            if kind == "error":
                raise value
            if self.device.type != "cpu":
                value = _map_tensors(value, lambda t: t.to(self.device, non_blocking=True))
            yield value

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _map_tensors(batch: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    out = {}
    for f in fields(batch):
        value = getattr(batch, f.name)
        out[f.name] = {k: fn(v) for k, v in value.items()} if isinstance(value, dict) else fn(value)
    return type(batch)(**out)
