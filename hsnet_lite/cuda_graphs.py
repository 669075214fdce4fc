"""Optional GPU speed mode: an HSNet episode replayed as one CUDA graph.

At the paper's sizes (400x400, batch 1) a GPU runs HSNet's kernels faster than Python can
launch them: on an H100 a ResNet101 episode takes about as long as the host needs to issue its
several hundred kernels (docs/performance.md). A CUDA graph records every kernel of one
forward pass once (``torch.cuda.graph``) and replays them all with one launch; each call copies
its inputs into the recorded input buffers first. The model's own forward pass is recorded
(:meth:`~hsnet_lite.model.HSNet.checked_forward`, the same kernels), so the logits equal the
eager ones; the test on a GPU checks it (``tests/test_cuda_graphs.py``).

A graph is recorded for one set of input shapes (batch, K, image size) and for the weights the
model has then: calls with other shapes, or after the weights changed, raise an error instead
of replaying the old recording. The kernels are those chosen while recording: with TF32 enabled
then (``torch.backends.cudnn.allow_tf32``), the replays run TF32 too. Inference only (no
autograd graph is recorded). Each recording keeps its own GPU memory for the intermediates of
the pass (about one eager episode's peak) until it is deleted.
"""
from __future__ import annotations

from typing import Callable, TypeVar

import torch

from .model import HSNet, mask_from_logits
from .validation import check_episode

INPUT_NAMES = ("query_img", "support_imgs", "support_masks")
T = TypeVar("T")


def input_signature(inputs: tuple[torch.Tensor, ...]) -> tuple[tuple, ...]:
    """(shape, dtype, device) of each checked episode input: what a recorded graph is bound to."""
    return tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)


def check_same_signature(expected: tuple[tuple, ...], inputs: tuple[torch.Tensor, ...]) -> None:
    """Raise a ``ValueError`` naming the first input whose shape, dtype or device differs from
    the recorded one (a graph replays fixed buffers: it cannot take other shapes)."""
    for name, want, got in zip(INPUT_NAMES, expected, input_signature(inputs)):
        if want != got:
            fmt = lambda sig: f"shape {sig[0]}, {sig[1]} on {sig[2]}"  # noqa: E731
            raise ValueError(f"{name} has {fmt(got)}, but this CUDA graph was recorded for {fmt(want)}; "
                             "record one CapturedHSNet per input shape")


def weights_fingerprint(model: torch.nn.Module) -> tuple[tuple[int, int], ...]:
    """Storage address and version counter of every parameter and buffer: any in-place edit,
    ``load_state_dict`` or ``.to()`` changes it (the graph would replay the old weights)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return tuple((t.data_ptr(), t._version) for t in tensors)


def record_graph(fn: Callable[[], T], device: torch.device, warmup: int = 3) -> tuple[torch.cuda.CUDAGraph, T]:
    """Run ``fn`` ``warmup`` times on a side stream (cuDNN picks its algorithms, one-time caches
    are filled, as ``torch.cuda.graph`` requires), then record one call of it as a CUDA graph.
    Returns the graph and that call's output: the buffers every replay rewrites."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(max(1, warmup)):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


class CapturedHSNet:
    """``model``'s inference on episodes shaped like the given ones, replayed as one CUDA graph.

    ``captured(query_img, support_imgs, support_masks)`` returns the logits of
    :meth:`HSNet.forward` and ``captured.predict_mask(...)`` the mask of
    :meth:`HSNet.predict_mask`; both are checked like the model's own inputs and returned as
    new tensors (the recorded output buffers are overwritten by the next replay).

    Args:
        model: an :class:`HSNet` on a CUDA device (eval mode; its weights must not change
            afterwards, or calls raise).
        query_img, support_imgs, support_masks: an example episode; later calls must have the
            same shapes, dtypes and device.
        warmup: eager passes on a side stream before recording (cuDNN picks its algorithms,
            one-time caches are filled, as ``torch.cuda.graph`` requires).
    """

    def __init__(self, model: HSNet, query_img: torch.Tensor, support_imgs: torch.Tensor,
                 support_masks: torch.Tensor, warmup: int = 3) -> None:
        inputs = self._checked(query_img, support_imgs, support_masks)
        device = inputs[0].device
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA GPU: query_img is on {device}")
        model_device = next(model.parameters()).device
        if model_device != device:
            raise ValueError(f"the model is on {model_device} but query_img is on {device}; move both to one GPU")
        self.model = model
        self.signature = input_signature(inputs)
        self.fingerprint = weights_fingerprint(model)
        self.inputs = tuple(t.clone() for t in inputs)
        with torch.no_grad():
            self.graph, (self.logits, self.mask) = record_graph(self._record_body, device, warmup)

    @staticmethod
    def _checked(query_img, support_imgs, support_masks) -> tuple[torch.Tensor, ...]:
        support_imgs, support_masks = check_episode(query_img, support_imgs, support_masks)
        return query_img, support_imgs, support_masks

    def _record_body(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The recorded work: the model's forward on the input buffers, and its mask."""
        logits = self.model.checked_forward(*self.inputs)
        return logits, mask_from_logits(logits)

    def replay(self, query_img: torch.Tensor, support_imgs: torch.Tensor, support_masks: torch.Tensor) -> None:
        """Check the episode, copy it into the input buffers and replay the graph (the results
        are then in ``self.logits`` and ``self.mask``, until the next replay)."""
        inputs = self._checked(query_img, support_imgs, support_masks)
        check_same_signature(self.signature, inputs)
        if weights_fingerprint(self.model) != self.fingerprint:
            raise RuntimeError("the model's weights changed after this CUDA graph was recorded (it would replay "
                               "the old ones); record a new CapturedHSNet")
        for buffer, value in zip(self.inputs, inputs):
            buffer.copy_(value)
        self.graph.replay()

    def __call__(self, query_img: torch.Tensor, support_imgs: torch.Tensor,
                 support_masks: torch.Tensor) -> torch.Tensor:
        """Logits, as :meth:`HSNet.forward`: (B, 2, H, W) for K = 1, else (B, K, 2, H, W)."""
        self.replay(query_img, support_imgs, support_masks)
        return self.logits.clone()

    def predict_mask(self, query_img: torch.Tensor, support_imgs: torch.Tensor,
                     support_masks: torch.Tensor) -> torch.Tensor:
        """(B, H, W) 0/1 mask, as :meth:`HSNet.predict_mask`."""
        self.replay(query_img, support_imgs, support_masks)
        return self.mask.clone()
