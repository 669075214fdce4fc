"""The fused center-pivot 4D convolution of ``csrc/center_pivot.c``, compiled on first use.

The center-pivot conv of supplementary Eq. 8 is two 2D convolutions of the same 6D tensor: over
the query dims at each (strided) support pivot (Eq. 7), and over the support dims at each query
position (Eq. 6). oneDNN runs each fast on its own, but a strided layer must first gather its
pivots, the two results must be added, and for the first squeezing layer of a level (few input
channels) oneDNN runs the convs well below the CPU's peak. ``center_pivot.c`` computes both in
one pass over the input: it reads each support map once, keeps its pivots packed in cache for
the query branch, and adds the two branches in registers (see its header).
:class:`~hsnet_lite.conv4d.CenterPivotConv4d` runs it for the squeezing layers at CPU inference.

The C file is compiled here with the system's C compiler (``$CC``, else ``cc`` or ``gcc``;
``-O3 -march=native -fopenmp``), once per machine, into a cache folder
(``$HSNET_LITE_CACHE``, else ``$XDG_CACHE_HOME/hsnet_lite`` or ``~/.cache/hsnet_lite``), and
loaded with :mod:`ctypes`. A build is checked against PyTorch's convolutions before it is used.
With no compiler, a failed build or check, or ``HSNET_LITE_NATIVE=0``, :func:`available` is
False and :class:`~hsnet_lite.conv4d.CenterPivotConv4d` runs its PyTorch path (same results up
to rounding); :func:`status` says why.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

SOURCE = Path(__file__).with_name("csrc") / "center_pivot.c"
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu11"]
ABI_VERSION = 1
LANES = 16  # output channels per vector register in the kernel: O must be a multiple of it


class _Args(ctypes.Structure):
    """``hl_cp_args`` of center_pivot.c, field for field."""

    _fields_ = [(name, ctypes.c_void_p) for name in ("x", "wq", "ws", "bias", "out")] + [
        (name, ctypes.c_int) for name in
        ("B", "Ha", "Wa", "Hb", "Wb", "C", "O", "P", "Q", "kq0", "kq1", "ks0", "ks1", "sh", "sw", "ph", "pw", "threads")
    ]


_state: dict = {}  # "lib" (a ctypes.CDLL or None) and "status" once loading was tried
_switched_off = [0]  # depth of the disabled() blocks being run


def cache_dir() -> Path:
    """Where compiled kernels are kept."""
    if os.environ.get("HSNET_LITE_CACHE"):
        return Path(os.environ["HSNET_LITE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hsnet_lite"


def compiler() -> str | None:
    """The C compiler used: ``$CC``, else ``cc`` or ``gcc`` on the PATH."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _cpu_flags() -> str:
    """The CPU's feature flags (``-march=native`` builds for them), or the machine name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(cc: str) -> Path:
    """Compile the kernel for this machine (or find it already compiled); returns the library's path."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(FLAGS), version, _cpu_flags(),
                                    platform.machine()]).encode()).hexdigest()[:16]
    folder = cache_dir()
    lib = folder / f"center_pivot-{key}.so"
    if lib.exists():
        return lib
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(fd)
    try:
        done = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"{cc} failed: {done.stderr.strip()[-2000:]}")
        os.replace(tmp, lib)  # atomic: another process sees the whole library or none
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def _load() -> None:
    """Build, load and check the kernel once per process; records why not in ``_state["status"]``."""
    if os.environ.get("HSNET_LITE_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        _state.update(lib=None, status="switched off by HSNET_LITE_NATIVE")
        return
    cc = compiler()
    if cc is None:
        _state.update(lib=None, status="no C compiler found (set $CC)")
        return
    try:
        lib = ctypes.CDLL(str(_build(cc)))
        if lib.hl_abi_version() != ABI_VERSION:
            raise RuntimeError("the compiled kernel's interface differs from this module's")
        lib.hl_center_pivot_forward.argtypes = [ctypes.POINTER(_Args)]
        lib.hl_center_pivot_forward.restype = ctypes.c_int
        _state.update(lib=lib, status=f"compiled with {cc}")
        _self_check()
    except Exception as err:  # noqa: BLE001 -- any failure means: run the PyTorch path
        _state.update(lib=None, status=f"not used: {err}")


def _self_check() -> None:
    """Compare the kernel with PyTorch's convolutions on a small strided layer; raise on a mismatch."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 5, 6, 9, 7, 3, generator=gen)  # (B, Ha, Wa, Hb, Wb, C)
    wq, ws = torch.randn(16, 3, 3, 5, generator=gen), torch.randn(16, 3, 5, 3, generator=gen)
    bias = torch.randn(16, generator=gen)
    got = center_pivot(x, wq, ws, bias, (2, 3), (2, 1))
    want = reference_center_pivot(x, wq, ws, bias, (2, 3), (2, 1))
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-5, atol=1e-5):
        raise RuntimeError("the compiled kernel disagrees with PyTorch's convolutions")


def available() -> bool:
    """True when the compiled kernel is loaded and checked (built on the first call), outside
    :func:`disabled` blocks."""
    if _switched_off[0]:
        return False
    if "status" not in _state:
        _load()
    return _state["lib"] is not None


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within the block, layers run their PyTorch path, as where the kernel cannot be built
    (to compare the two, or to time oneDNN's convs)."""
    _switched_off[0] += 1
    try:
        yield
    finally:
        _switched_off[0] -= 1


def status() -> str:
    """How the kernel was built, or why it is not used."""
    available()
    return _state["status"]


def output_size(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int]) -> tuple[int, int]:
    """(P, Q): the support conv's output size."""
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel, stride, padding))  # type: ignore[return-value]


def pack_kernel(weight: torch.Tensor) -> torch.Tensor:
    """A conv kernel (O, C, kh, kw) in the kernel's layout, (kh, kw, C, O) contiguous."""
    return weight.detach().permute(2, 3, 1, 0).contiguous()


def center_pivot(xl: torch.Tensor, query_weight: torch.Tensor, support_weight: torch.Tensor,
                 bias: torch.Tensor | None, stride: tuple[int, int], padding: tuple[int, int],
                 packed: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Eq. 8 on the channels-last (B, Ha, Wa, Hb, Wb, C) fp32 CPU tensor ``xl``: the query conv
    (padding k//2, at the pivots) plus the support conv (``stride``, ``padding``) plus ``bias``.

    ``packed``: the two kernels already in :func:`pack_kernel`'s layout. Returns the
    (B, Ha, Wa, P, Q, O) sum. Raises ValueError for inputs the kernel does not take (see
    :func:`supports`) and RuntimeError when it is not :func:`available`.
    """
    if not available():
        why = "switched off by native.disabled()" if _switched_off[0] else status()
        raise RuntimeError(f"the fused center-pivot kernel is not available: {why}")
    problem = _problem(xl, query_weight, support_weight, bias)
    if problem:
        raise ValueError(f"fused center-pivot kernel: {problem}")
    o, c, kq0, kq1 = query_weight.shape
    ks0, ks1 = support_weight.shape[2:]
    b, ha, wa, hb, wb, _ = xl.shape
    p, q = output_size((hb, wb), (ks0, ks1), stride, padding)
    if p < 1 or q < 1:
        raise ValueError(f"fused center-pivot kernel: no output for a ({hb}, {wb}) support and kernel ({ks0}, {ks1})")
    wq, ws = packed if packed is not None else (pack_kernel(query_weight), pack_kernel(support_weight))
    bias = None if bias is None else bias.detach().contiguous()
    out = xl.new_empty(b, ha, wa, p, q, o)
    args = _Args(xl.data_ptr(), wq.data_ptr(), ws.data_ptr(), 0 if bias is None else bias.data_ptr(), out.data_ptr(),
                 b, ha, wa, hb, wb, c, o, p, q, kq0, kq1, ks0, ks1, *stride, *padding, torch.get_num_threads())
    code = _state["lib"].hl_center_pivot_forward(ctypes.byref(args))
    if code:
        raise RuntimeError("fused center-pivot kernel: " + ("unsupported arguments" if code == -1 else "out of memory"))
    return out


def _problem(xl: torch.Tensor, query_weight: torch.Tensor, support_weight: torch.Tensor,
             bias: torch.Tensor | None) -> str | None:
    """What makes these inputs unfit for the kernel, or None."""
    o, c = query_weight.shape[:2]
    kq, ks = tuple(query_weight.shape[2:]), tuple(support_weight.shape[2:])
    tensors = [xl, query_weight, support_weight] + ([] if bias is None else [bias])
    if xl.dim() != 6 or xl.shape[-1] != c:
        return f"expected a (B, Ha, Wa, Hb, Wb, {c}) tensor, got shape {tuple(xl.shape)}"
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return "expected fp32 CPU tensors"
    if not xl.is_contiguous():
        return "expected a contiguous channels-last input"
    if o % LANES:
        return f"output channels must be a multiple of {LANES}, got {o}"
    if support_weight.shape[:2] != (o, c) or (bias is not None and bias.shape != (o,)):
        return "kernel or bias shapes do not match"
    if kq[0] % 2 == 0 or kq[1] % 2 == 0 or kq[0] * kq[1] > 121 or ks[0] * ks[1] > 121:
        return f"kernels must be odd and at most 11 x 11, got {kq} and {ks}"
    return None


def supports(xl: torch.Tensor, out_channels: int) -> bool:
    """True when the kernel can run on ``xl`` (fp32 CPU, contiguous, output channels a multiple of 16)."""
    return (xl.device.type == "cpu" and xl.dtype == torch.float32 and xl.dim() == 6 and xl.is_contiguous()
            and out_channels % LANES == 0)


def reference_center_pivot(xl: torch.Tensor, query_weight: torch.Tensor, support_weight: torch.Tensor,
                           bias: torch.Tensor | None, stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """What :func:`center_pivot` computes, with two plain ``F.conv2d`` calls in float64 (for checks
    and tests: PyTorch's own float64 kernels, not oneDNN's), returned in ``xl``'s dtype."""
    dtype = xl.dtype
    xl, query_weight, support_weight = xl.double(), query_weight.double(), support_weight.double()
    bias = None if bias is None else bias.double()
    b, ha, wa, hb, wb, c = xl.shape
    o = query_weight.shape[0]
    ks0, ks1 = support_weight.shape[2:]
    sup = F.conv2d(xl.reshape(-1, hb, wb, c).permute(0, 3, 1, 2), support_weight, bias, stride, padding)
    p, q = sup.shape[-2:]
    r0, c0 = ks0 // 2 - padding[0], ks1 // 2 - padding[1]
    pivots = xl[:, :, :, r0 : r0 + stride[0] * (p - 1) + 1 : stride[0], c0 : c0 + stride[1] * (q - 1) + 1 : stride[1]]
    images = pivots.permute(0, 3, 4, 5, 1, 2).reshape(-1, c, ha, wa)
    kq0, kq1 = query_weight.shape[2:]
    qry = F.conv2d(images, query_weight, None, 1, (kq0 // 2, kq1 // 2))
    qry = qry.view(b, p, q, o, ha, wa).permute(0, 4, 5, 1, 2, 3)
    return (sup.view(b, ha, wa, o, p, q).permute(0, 1, 2, 4, 5, 3) + qry).to(dtype)


class PackedKernels:
    """A center-pivot layer's two kernels in the fused kernel's layout (:func:`pack_kernel`), kept
    between inference calls and rebuilt when either weight's storage or version counter changes
    (an optimiser step or ``load_state_dict`` writes in place). Copies and pickles start empty."""

    def __init__(self) -> None:
        self.entry: tuple | None = None

    def get(self, query_weight: torch.Tensor, support_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The packed (query, support) kernels of these weights."""
        if query_weight.is_inference() or support_weight.is_inference():  # versions not tracked: pack anew
            return pack_kernel(query_weight), pack_kernel(support_weight)
        key = tuple((w.data_ptr(), w._version, w.dtype) for w in (query_weight, support_weight))
        if self.entry is None or self.entry[0] != key:
            # the entry holds the weights, so their addresses cannot be reused while it lives
            self.entry = (key, (query_weight.detach(), support_weight.detach()),
                          (pack_kernel(query_weight), pack_kernel(support_weight)))
        return self.entry[2]

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
