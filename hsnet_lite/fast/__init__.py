"""CPU speed paths of hsnet-lite: each computes what the plain model code computes (up to rounding), faster.

The model's modules (:mod:`hsnet_lite.conv4d`, :mod:`hsnet_lite.correlation`,
:mod:`hsnet_lite.blocks`, :mod:`hsnet_lite.backbones`) call into these on the CPU; each has an
equivalence test against the plain computation:

- :mod:`~hsnet_lite.fast.folded_convs`: the frozen backbone's BatchNorm folded into oneDNN's fused,
  prepacked convolutions, and the learner's kernels packed once for inference
  (``tests/test_folded_convs.py``).
- :mod:`~hsnet_lite.fast.support_crop`: the first squeezing layer of a level reads only the
  support window its outputs touch (``tests/test_support_crop.py``).
- :mod:`~hsnet_lite.fast.cropped_norm`: that layer's group norm over its constant region in
  closed form, forward and backward (``tests/test_support_crop.py``).
- :mod:`~hsnet_lite.fast.strided_pivot`: a hand-written backward for strided center-pivot
  layers in training (``tests/test_strided_pivot.py``), and the pivots' gather copied in wide
  units (``tests/test_folded_convs.py``).
- :mod:`~hsnet_lite.fast.native`: the squeezing layers at inference as one fused
  kernel (``csrc/center_pivot.c``, compiled for the machine on first use; the oneDNN path where it
  cannot be built) that reads the input once and sums both branches in registers
  (``tests/test_native.py``).

docs/performance.md gives what each one saves.
"""
