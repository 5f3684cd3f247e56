"""A tiny array adapter so that numpy arrays and torch tensors (any device) go
through the same neural-collapse code.

Only the handful of operations the metrics need are provided. Small results
(K x d class statistics, d x d scatter) are moved to the CPU as float64 numpy
arrays for the final linear algebra; per-sample data never leaves its device.
torch is imported only when a tensor is actually given.
"""

import ctypes
import functools

import numpy as np

from ..utils import is_torch_tensor

# Target size in bytes of one chunk of input rows processed at a time. Chunks
# of a few MB keep every temporary cache-resident on CPUs; GPUs get bigger ones.
_CPU_CHUNK_BYTES = 2**22
_GPU_CHUNK_BYTES = 2**27


def get_ops(X):
    """Return the adapter for the array ``X`` (numpy or torch)."""
    if is_torch_tensor(X):
        return _TorchOps(X.device)
    return _NumpyOps()


class _NumpyOps:
    """numpy implementation of the adapter."""

    is_torch = False
    device = None

    def __eq__(self, other):
        return isinstance(other, _NumpyOps)

    def __hash__(self):
        return hash("numpy")

    def chunk_rows(self, n_features, itemsize, chunk_size=None):
        if chunk_size is not None:
            return int(chunk_size)
        return max(64, _CPU_CHUNK_BYTES // max(1, n_features * itemsize))

    def compute_dtype(self, X):
        return np.float64 if X.dtype == np.float64 else np.float32

    def np_dtype(self, dtype):
        """numpy dtype matching the backend dtype ``dtype``."""
        return np.dtype(dtype).type

    def astype(self, a, dtype):
        return np.asarray(a, dtype=dtype)

    def from_numpy(self, a, dtype=None):
        return np.asarray(a, dtype=dtype)

    def to_numpy(self, a):
        return np.asarray(a)

    def zeros(self, shape, dtype=np.float64):
        return np.zeros(shape, dtype=dtype)

    def f64(self):
        return np.float64

    def i64(self):
        return np.int64

    def empty_like_rows(self, n, m, dtype):
        return np.empty((n, m), dtype=dtype)

    def shifted64(self, X, ref, out=None):
        """``X - ref`` computed and returned in float64 (``ref`` float64 on the device).

        The rows are converted first (``copyto``, exact) and shifted in
        place: the same float64 values as ``np.subtract(X, ref,
        dtype=np.float64)``, whose casting loop is about 1.4x slower.
        ``ref`` None means no shift (the conversion only).
        """
        if out is None:
            out = np.empty(X.shape, dtype=np.float64)
        np.copyto(out, X)
        return out if ref is None else np.subtract(out, ref, out=out)

    def scale_(self, a, e):
        """Multiply ``a`` in place by ``2**-e`` (exact; nothing when ``e == 0``)."""
        if e:
            np.ldexp(a, -e, out=a)
        return a

    def amax_abs(self, a):
        return float(np.abs(a).max()) if a.size else 0.0

    def class_sums(self, Y, codes, n_classes):
        """Per-class sums of the rows of ``Y`` (returned in ``Y``'s dtype).

        ``onehot @ Y`` with the (n_classes, n) indicator in CSC form (scipy's
        public sparse product): each row of ``Y`` is added, in row order, to
        its class's sum; ``codes`` must lie in ``[0, n_classes)``.
        """
        import scipy.sparse as sp

        n = codes.shape[0]
        onehot = sp.csc_array(
            (np.ones(n, dtype=Y.dtype), np.asarray(codes, dtype=np.intp), np.arange(n + 1)),
            shape=(n_classes, n),
        )
        return np.asarray(onehot @ Y)

    def counts(self, codes, n_classes):
        return np.bincount(codes, minlength=n_classes).astype(np.int64)

    def weighted_counts(self, codes, weights, n_classes):
        return np.bincount(codes, weights=weights, minlength=n_classes)

    def take_rows(self, M, codes, out=None):
        if out is None:
            return M.take(codes, axis=0)
        return np.take(M, codes, axis=0, out=out, mode="clip")

    def rownorm2(self, E):
        return np.einsum("ij,ij->i", E, E)

    def subtract(self, a, b, out):
        return np.subtract(a, b, out=out)

    def add(self, a, b, out):
        return np.add(a, b, out=out)

    def matmul(self, a, b, out=None):
        return np.matmul(a, b, out=out)

    def sum64(self, a):
        return float(np.sum(a, dtype=np.float64))

    def argmax(self, S):
        return np.argmax(S, axis=1)

    def count_neq(self, a, b):
        return int(np.count_nonzero(a != b))

    def near_ties(self, S, idx, tol):
        """Rows whose best score (at ``idx``) is within ``tol`` of another."""
        rows = np.arange(S.shape[0])
        top = S[rows, idx]
        S[rows, idx] = -np.inf  # second best = max of the others
        second = S.max(axis=1)
        S[rows, idx] = top
        return second >= top - tol

    def nonzero(self, mask):
        return np.flatnonzero(mask)

    def nearest_rows(self, X, means):
        """Index of the nearest row of ``means`` (direct float64 distances)."""
        from scipy.spatial.distance import cdist

        return cdist(X, means, "sqeuclidean").argmin(axis=1)

    def gram_sum(self, n_features, dtype, buf=None):
        """An empty :class:`_GramSum` (float64 sum of Gram products in ``dtype``)."""
        return _GramSum(n_features, dtype, buf)

    def gram_full(self, value):
        """The symmetric ``(d, d)`` float64 matrix of a :class:`_GramSum` value."""
        return _GramSum.full(value)

    def all_finite(self, a):
        return bool(np.isfinite(a).all())

    def scalar(self, a):
        return float(a)


class _TorchOps:
    """torch implementation of the adapter (tensors stay on their device)."""

    is_torch = True

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = torch.device(device)

    def __eq__(self, other):
        return isinstance(other, _TorchOps) and other.device == self.device

    def __hash__(self):
        return hash(("torch", str(self.device)))

    def chunk_rows(self, n_features, itemsize, chunk_size=None):
        if chunk_size is not None:
            return int(chunk_size)
        budget = _CPU_CHUNK_BYTES if self.device.type == "cpu" else _GPU_CHUNK_BYTES
        return max(64, budget // max(1, n_features * itemsize))

    def compute_dtype(self, X):
        torch = self.torch
        return torch.float64 if X.dtype == torch.float64 else torch.float32

    def np_dtype(self, dtype):
        """numpy dtype matching the backend dtype ``dtype``."""
        return np.float64 if dtype == self.torch.float64 else np.float32

    def astype(self, a, dtype):
        return a.to(dtype=dtype)

    def from_numpy(self, a, dtype=None):
        torch = self.torch
        t = torch.as_tensor(np.ascontiguousarray(a))
        return t.to(device=self.device, dtype=dtype if dtype is not None else t.dtype)

    def to_numpy(self, a):
        return a.detach().cpu().numpy()

    def zeros(self, shape, dtype=None):
        dtype = self.torch.float64 if dtype is None else dtype
        return self.torch.zeros(shape, dtype=dtype, device=self.device)

    def f64(self):
        return self.torch.float64

    def i64(self):
        return self.torch.int64

    def empty_like_rows(self, n, m, dtype):
        return self.torch.empty((n, m), dtype=dtype, device=self.device)

    def shifted64(self, X, ref, out=None):
        """``X - ref`` computed and returned in float64 (``ref`` float64 on the device).

        Always a new tensor: for a float64 ``X`` (on a GPU; CPU tensors take
        the numpy path) ``to`` without ``copy=True`` returns ``X`` itself,
        and the shift in place changed the caller's data. ``ref=None``
        converts only.
        """
        Y = X.to(self.torch.float64, copy=True)
        return Y if ref is None else Y.sub_(ref)

    def scale_(self, a, e):
        """Multiply ``a`` in place by ``2**-e`` (exact; nothing when ``e == 0``)."""
        if e:
            # two powers of two, each representable even in float32
            half = -e // 2
            a.mul_(2.0**half).mul_(2.0 ** (-e - half))
        return a

    def amax_abs(self, a):
        return float(a.abs().max()) if a.numel() else 0.0

    def class_sums(self, Y, codes, n_classes):
        out = self.torch.zeros((n_classes, Y.shape[1]), dtype=Y.dtype, device=Y.device)
        return out.index_add_(0, codes, Y)

    def counts(self, codes, n_classes):
        return self.torch.bincount(codes, minlength=n_classes).to(self.torch.int64)

    def weighted_counts(self, codes, weights, n_classes):
        out = self.torch.zeros(n_classes, dtype=self.torch.float64, device=codes.device)
        return out.index_add_(0, codes, weights.to(self.torch.float64))

    def take_rows(self, M, codes, out=None):
        if out is None:
            return M.index_select(0, codes)
        return self.torch.index_select(M, 0, codes, out=out)

    def rownorm2(self, E):
        return (E * E).sum(1)

    def subtract(self, a, b, out):
        return self.torch.sub(a, b, out=out)

    def add(self, a, b, out):
        return self.torch.add(a, b, out=out)

    def matmul(self, a, b, out=None):
        return self.torch.matmul(a, b, out=out)

    def sum64(self, a):
        # stays on the device: the caller accumulates tensors and syncs once
        return a.sum(dtype=self.torch.float64)

    def argmax(self, S):
        return S.argmax(dim=1)

    def count_neq(self, a, b):
        return (a != b).sum()

    def near_ties(self, S, idx, tol):
        # masked max: far cheaper than topk(2) on CPU
        rows = self.torch.arange(S.shape[0], device=S.device)
        top = S[rows, idx]
        S[rows, idx] = -float("inf")
        second = S.amax(dim=1)
        S[rows, idx] = top
        return second >= top - tol

    def nonzero(self, mask):
        return mask.nonzero()[:, 0]

    def nearest_rows(self, X, means):
        out = []
        step = max(1, 2**24 // max(1, means.numel()))
        for i in range(0, X.shape[0], step):
            diff = X[i : i + step, None, :] - means[None]
            out.append((diff * diff).sum(-1).argmin(dim=1))
        return self.torch.cat(out)

    def gram_sum(self, n_features, dtype, buf=None):
        """Float64 sum of ``E^T E`` products in ``dtype`` (whole matrices, on the device)."""
        return _TorchGramSum(self, n_features)

    def gram_full(self, value):
        """The symmetric float64 numpy matrix whose lower triangle is ``value``'s."""
        a = self.to_numpy(value)
        low = np.tril(a)
        return low + np.tril(a, -1).T

    def all_finite(self, a):
        return bool(self.torch.isfinite(a).all())

    def scalar(self, a):
        return float(a)


# float64 block of the class sums: ~4 MB, so that the converted rows stay in
# the CPU cache between the conversion and the sum
_SUM64_BYTES = 2**22


def sum64_rows(n_features):
    """Rows per float64 block of :func:`class_sums64`."""
    return max(64, _SUM64_BYTES // (8 * max(1, n_features)))


def class_sums64(ops, X, codes, n_classes, ref, exp, buf=None):
    """Per-class float64 sums of ``(X - ref) * 2**-exp``, in cache-sized blocks.

    Every row is converted to float64 before the reference is subtracted and
    before it is summed, so neither a common offset nor the order of the
    rows costs digits. ``ref=None`` sums the rows unshifted (data whose
    offset is negligible; float64 numpy rows are then summed in place, with
    no copy). ``buf`` (numpy only) is a float64 scratch block of
    :func:`sum64_rows` rows.
    """
    n = X.shape[0]
    step = n if ops.is_torch else buf.shape[0]
    sums = None
    for i in range(0, n, step):
        out = None if ops.is_torch else buf[: min(step, n - i)]
        Xb = X[i : i + step]
        if ref is None and not exp and not ops.is_torch and Xb.dtype == np.float64:
            Y = Xb  # nothing to convert, shift or scale
        else:
            Y = ops.scale_(ops.shifted64(Xb, ref, out=out), exp)
        part = ops.class_sums(Y, codes[i : i + step], n_classes)
        sums = part if sums is None else sums + part
    return sums


# ---------------------------------------------------------------------------
# Gram products of the within-class scatter
# ---------------------------------------------------------------------------


@functools.cache
def _blas_syrk(np_dtype):
    """BLAS ``ssyrk``/``dsyrk`` of scipy's ``cython_blas`` as a ctypes function, or None.

    Called through ctypes, the product runs without the GIL (scipy's Python
    wrapper holds it: worker threads would wait on each other) and writes
    one triangle into any leading dimension (see :class:`_GramSum`).
    """
    try:
        from scipy.linalg import cython_blas

        capsule = cython_blas.__pyx_capi__["ssyrk" if np_dtype == np.float32 else "dsyrk"]
        api = ctypes.pythonapi
        api.PyCapsule_GetName.restype = ctypes.c_char_p
        api.PyCapsule_GetName.argtypes = [ctypes.py_object]
        api.PyCapsule_GetPointer.restype = ctypes.c_void_p
        api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
        address = api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))
    except Exception:  # pragma: no cover - not CPython, or another scipy
        return None
    return ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 10)(address)


class _GramSum:
    """Float64 sum of the Gram products ``E^T E`` of blocks of rows ``E``.

    Each product is formed in ``E``'s dtype (one BLAS ``syrk``: one
    triangle, half the products of ``E.T @ E``) and added to a float64
    accumulator. Two consecutive products share one scratch matrix of
    ``(d + 1, d)`` entries (Fortran order): the first's lower triangle,
    diagonal included, in rows ``1..d``, the second's upper triangle in rows
    ``0..d-1``; the two do not overlap, so one float64 addition folds both
    (half the conversions of folding each product). :meth:`full` unpacks
    the sum into the symmetric ``(d, d)`` matrix. The products are the same
    as numpy's ``E.T @ E`` (which runs the same ``syrk``).
    """

    def __init__(self, n_features, dtype, buf=None):
        d = self.d = n_features
        self.dtype = np.dtype(dtype)
        if buf is None:  # scratch: every entry is written before it is read
            buf = np.empty((d + 1, d), dtype=self.dtype, order="F")
        self.buf = buf
        self.value = None  # the float64 sum, from the first fold on
        self.pending = False  # a product waits in the lower part of buf
        self.syrk = _blas_syrk(self.dtype.type)

    def add(self, E):
        """Add ``E^T E`` (``E`` of shape (rows, d), rows unit-strided)."""
        if E.shape[0] == 0:
            return
        lower = not self.pending
        item = self.dtype.itemsize
        if (
            self.syrk is None
            or E.dtype != self.dtype
            or E.strides[1] != item
            or E.strides[0] < self.d * item  # rows overlap or run backwards
        ):
            self._add_numpy(E, lower)
        else:
            self._add_blas(E, lower)
        if self.pending:
            self._fold()
        self.pending = lower

    def _fold(self):
        if self.value is None:
            self.value = np.array(self.buf, dtype=np.float64, order="F")
        else:
            self.value += self.buf

    def _add_blas(self, E, lower):
        d, c_int, item = self.d, ctypes.c_int, self.dtype.itemsize
        scalar = ctypes.c_float if self.dtype == np.float32 else ctypes.c_double
        args = [
            ctypes.c_char(b"L" if lower else b"U"),
            ctypes.c_char(b"N"),  # C-ordered E is E^T in Fortran order: C = E^T E
            c_int(d),
            c_int(E.shape[0]),
            scalar(1.0),
            None,
            c_int(E.strides[0] // item),
            scalar(0.0),
            None,
            c_int(d + 1),
        ]
        refs = [ctypes.byref(a) if a is not None else None for a in args]
        refs[5] = ctypes.c_void_p(E.ctypes.data)
        refs[8] = ctypes.c_void_p(self.buf.ctypes.data + (item if lower else 0))
        self.syrk(*refs)

    def _add_numpy(self, E, lower):
        G = np.matmul(E.T, E)
        d = self.d
        if lower:
            np.copyto(self.buf[1:], G, where=np.tri(d, dtype=bool))
        else:
            np.copyto(self.buf[:d], G, where=np.tri(d, dtype=bool).T)

    def total(self):
        """The float64 sum (a packed ``(d + 1, d)`` array; add several, then :meth:`full`)."""
        if self.pending:  # a product alone in the lower part: clear the upper one
            d = self.d
            np.copyto(self.buf[:d], 0, where=np.tri(d, dtype=bool).T)
            self._fold()
            self.pending = False
        if self.value is None:
            self.value = np.zeros((self.d + 1, self.d), order="F")
        return self.value

    @staticmethod
    def full(value):
        """The symmetric ``(d, d)`` matrix of a packed sum (exactly symmetric)."""
        d = value.shape[1]
        first, second = value[1:], value[:d]  # lower and upper triangles
        T = np.where(np.tri(d, k=-1, dtype=bool), first, second)
        S = T + T.T
        diag = np.arange(d)
        S[diag, diag] = np.diagonal(first) + np.diagonal(second)
        return S


class _TorchGramSum:
    """Float64 sum on the device of torch ``E.T @ E`` products (whole matrices)."""

    def __init__(self, ops, n_features):
        self.value = ops.zeros((n_features, n_features), dtype=ops.f64())

    def add(self, E):
        """Add ``E^T E``, formed in ``E``'s dtype."""
        self.value += E.T @ E

    def total(self):
        return self.value
