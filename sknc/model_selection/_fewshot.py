"""Vectorised few-shot evaluation of the nearest-class-centre classifier."""

import numbers
import queue
import warnings
from contextlib import ExitStack, closing
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import accuracy_score
from sklearn.utils import check_array
from sklearn.utils.validation import check_consistent_length

from ..neighbors import NearestClassCenter
from ..neighbors._nearest_class_center import _validate_ncc_params
from ..utils import (
    is_torch_tensor,
    map_threads,
    resolve_device,
    single_thread,
    thread_budget,
    thread_limits,
    to_numpy,
)
from ._episodes import EpisodeSplit

# On the CPU, support and query rows are gathered in sub-batches of about this
# many bytes, which stay in cache until they are used.
_SUB_BATCH_BYTES = 1 << 19

# Queries left undecided by the float32 pass are settled in float64 once this
# many are queued (or at the end).
_PENDING_QUERIES = 4096

# Size (in elements) of the support + query features of one batch of episodes
# on the CPU (about 80 episodes of 5-way 5-shot 15-query on 512-d features;
# they are gathered in cache-sized sub-batches); 16 times that on GPUs.
_BATCH_ELEMENTS = 1 << 22


@dataclass(frozen=True, repr=False, eq=False)
class FewShotResult:
    """Few-shot accuracy over many episodes, returned by :func:`evaluate_episodes`.

    Attributes
    ----------
    scores : ndarray of shape (n_episodes,)
        Accuracy of each episode, in the order ``cv.split`` yields them.
    mean : float
        Mean accuracy over the episodes.
    std : float
        Standard deviation of the episode accuracies (population, ``ddof=0``).
    ci95 : float
        Half-width of the 95% confidence interval of the mean,
        ``1.96 * std / sqrt(n_episodes)``.
    n_episodes, n_way, n_shot, n_query : int
        The episode protocol.
    classes : ndarray
        The labels of the classes the episodes were drawn from.
    cdnv : float or None
        Class-distance normalised variance (:func:`sknc.metrics.cdnv`) of
        the features of ``classes``, or None if not requested.
    n_exact : int
        Number of episodes with a near-tie between class centres, settled by
        running :class:`~sknc.neighbors.NearestClassCenter` itself on them.
    """

    scores: np.ndarray
    mean: float
    std: float
    ci95: float
    n_episodes: int
    n_way: int
    n_shot: int
    n_query: int
    classes: np.ndarray = field(default_factory=lambda: np.empty(0))
    cdnv: float | None = None
    n_exact: int = 0

    def __repr__(self):
        text = (
            f"{self.n_way}-way {self.n_shot}-shot: {100 * self.mean:.1f}% "
            f"\u00b1 {100 * self.ci95:.1f}%"
        )
        if self.cdnv is not None:
            text += f" (CDNV {self.cdnv:.3g})"
        return text

    def as_dict(self):
        """The summary as a plain dict (``scores`` and ``classes`` as lists)."""
        return {
            "scores": self.scores.tolist(),
            "mean": self.mean,
            "std": self.std,
            "ci95": self.ci95,
            "n_episodes": self.n_episodes,
            "n_way": self.n_way,
            "n_shot": self.n_shot,
            "n_query": self.n_query,
            "classes": self.classes.tolist(),
            "cdnv": self.cdnv,
            "n_exact": self.n_exact,
        }


def _row_norms(Xt, rows=None):
    """Float64 Euclidean norms of the rows of ``Xt`` (only ``rows`` if given, others 0).

    Computed in chunks on ``Xt``'s device, without a float64 copy of ``Xt``.
    """
    import torch

    n, d = Xt.shape
    out = torch.zeros(n, dtype=torch.float64, device=Xt.device)
    f64 = torch.float64

    def norm(chunk):
        if not chunk.is_floating_point():
            chunk = chunk.to(f64)
        return torch.linalg.vector_norm(chunk, dim=1, dtype=f64)

    step = max(1, (1 << 18) // max(d, 1))
    if rows is None:
        for i in range(0, n, step):
            out[i : i + step] = norm(Xt[i : i + step])
    else:
        rows = torch.as_tensor(rows, dtype=torch.int64, device=Xt.device)
        for i in range(0, rows.numel(), step):
            r = rows[i : i + step]
            out[r] = norm(Xt[r])
    return out


def _ieee_fp32_matmul(device):
    """True if float32 matrix products on ``device`` run in IEEE float32.

    TF32 / bfloat16 shortcuts (``torch.set_float32_matmul_precision``,
    ``allow_tf32``, the ``fp32_precision`` switches) would void the float32
    error bound of the first pass; then everything is done in float64.
    """
    import torch

    try:
        if torch.get_float32_matmul_precision() != "highest":
            return False
        backends = torch.backends
        flags = [getattr(backends, "fp32_precision", "none")]
        if device.type == "cuda":
            if backends.cuda.matmul.allow_tf32:
                return False
            flags.append(getattr(backends.cuda.matmul, "fp32_precision", "none"))
        elif device.type == "cpu":
            mkldnn_matmul = getattr(backends.mkldnn, "matmul", None)
            flags.append(getattr(mkldnn_matmul, "fp32_precision", "none"))
        else:
            return False
        return all(f in ("none", "ieee") for f in flags)
    except Exception:  # an unknown torch: be safe
        return False


class _EpisodeKernel:
    """Vectorised NCC over a batch of episodes, with a rounding-difference bound.

    Holds one worker's preallocated buffers (gathered support and query rows,
    centre matrices), so that batches reuse memory instead of allocating and
    page-faulting fresh buffers.

    Parameters
    ----------
    Xt : torch.Tensor of shape (n_samples, n_features)
        Features, on the device to compute on (any real dtype).
    norms : torch.Tensor of shape (n_samples,), float64
        Euclidean norms of the rows of ``Xt`` (see :func:`_row_norms`).
    n_way, n_shot, n_query : int
    batch_size : int
        Largest number of episodes per call.
    metric, normalize : str or None
        As in ``NearestClassCenter``.

    Notes
    -----
    Same decision rule as ``NearestClassCenter``. Supports are handled in
    float64. The (many) query rows are gathered once and read once, by one
    batched product with the episode's centre matrix ``M`` (the class
    vectors ``v_k`` plus, where needed, one extra vector ``a``):

    - Euclidean on raw features: score ``||v||^2 - 2 (q.v - a.v)`` with
      ``v = c - a`` and ``a`` the mean of the centres; it differs from the
      squared distance by ``||q - a||^2``, the same for every class.
    - Euclidean on normalised features: ``||c||^2 - 2 q~.c``.
    - Cosine: ``-q~.c/||c||``.

    Here ``q~ = (q - a) / ||q - a||`` is the normalised query (``a`` the
    support mean for ``"center+l2"``, else 0), obtained from ``q.c``,
    ``q.a`` and the precomputed ``||q||`` without forming ``q - a``.

    Every query gets a forward-error bound ``E`` on its scores, valid for
    this computation and for ``NearestClassCenter``'s: ``gamma = 16 (d + W K
    + 16) eps64`` times the magnitudes involved (normalising after centring
    amplifies rounding by ``(||x|| + ||a||) / ||x - a||``). If the two best
    scores are more than ``8 E`` apart (twice what two scores in two
    implementations need), both implementations pick the same class.

    Two passes: for float32 (or half) features, the query products are first
    computed in float32 from the float32 rows (no float64 copy of the
    queries), the bound widened by the float32 product's error,
    ``eps32 ||q|| max ||m||`` with ``eps32 = (d + 2) u32 / (1 - (d + 2) u32)``
    (doubled in the comparison, like the float64 bound). For
    ``"center+l2"`` the float32 queries are centred on ``a`` before the
    product (the expansion of ``||q - a||^2`` would lose too much in float32),
    which adds the rounding of ``q - a`` to the bound. Only the queries the
    first pass leaves undecided are recomputed in float64. Queries still
    undecided make their episode "unsure"; the caller settles it with
    ``NearestClassCenter`` itself.
    """

    def __init__(self, Xt, norms, n_way, n_shot, n_query, batch_size, metric, normalize):
        import torch

        self.Xt, self.norms = Xt, norms
        self.W, self.K, self.Q = n_way, n_shot, n_query
        self.metric, self.normalize = metric, normalize
        d = Xt.shape[1]
        f64, f32 = torch.float64, torch.float32
        dev = Xt.device
        self.d = d
        self.gamma = 16.0 * (d + n_way * n_shot + 16) * torch.finfo(f64).eps
        # the products also need the extra vector a
        self.has_a = normalize == "center+l2" or (normalize is None and metric == "euclidean")
        n_m = n_way + 1 if self.has_a else n_way
        self.fast32 = Xt.dtype in (f32, torch.float16, torch.bfloat16) and _ieee_fp32_matmul(dev)
        u32 = torch.finfo(f32).eps / 2
        # rigorous bound for a float32 dot product of length d (any summation
        # order), including the rounding of the float64 vector to float32
        self.eps32 = (d + 2) * u32 / (1.0 - (d + 2) * u32)
        self.two_u32 = 2.0 * u32
        self.tiny32 = 4.0 * d * torch.finfo(f32).tiny  # flush-to-zero of tiny products

        # on the CPU, supports are gathered (in float64) in cache-sized sub-batches
        per_ep = n_way * n_shot * d * 8
        self.sub_support = (
            max(1, min(batch_size, _SUB_BATCH_BYTES // per_ep)) if dev.type == "cpu" else batch_size
        )
        n_s = self.sub_support * n_way * n_shot
        # on the CPU, queries are gathered in cache-sized sub-batches, which
        # stay in cache until the product reads them
        self.sub_batch = (
            max(1, min(batch_size, _SUB_BATCH_BYTES // (n_way * n_query * d * 4)))
            if dev.type == "cpu"
            else batch_size
        )
        n_q = self.sub_batch * n_way * n_query
        self.s64 = torch.empty(n_s, d, dtype=f64, device=dev)
        self.s_raw = torch.empty(n_s, d, dtype=Xt.dtype, device=dev) if Xt.dtype != f64 else None
        q_dtype = f32 if self.fast32 else f64
        self.q = torch.empty(n_q, d, dtype=q_dtype, device=dev)
        self.q_raw = (
            torch.empty(n_q, d, dtype=Xt.dtype, device=dev) if Xt.dtype != q_dtype else None
        )
        self.M64 = torch.empty(batch_size, n_m, d, dtype=f64, device=dev)
        self.C64 = torch.empty(batch_size, n_way, d, dtype=f64, device=dev)
        self.M32 = torch.empty(batch_size, n_m, d, dtype=f32, device=dev) if self.fast32 else None
        self.truth = torch.arange(n_way, device=dev).repeat_interleave(n_query)
        self._pending, self.n_pending = [], 0
        self.avg_w = torch.full((1, n_way), 1.0 / n_way, dtype=f64, device=dev)

    def _gather(self, idx, out, raw):
        import torch

        n = idx.numel()
        if raw is None:
            return torch.index_select(self.Xt, 0, idx, out=out[:n])
        torch.index_select(self.Xt, 0, idx, out=raw[:n])
        return out[:n].copy_(raw[:n])

    def _scores(self, P, q_norm, ep, eps_p=None, centred=None):
        """Scores (lower is nearer) of queries, and whether the best is certain.

        Classes run along axis -2 of ``P``, queries along axis -1. Two forms
        of input:

        - float64 products ``P[..., k, j] = q_j.m_k`` with the rows ``m`` of
          the centre matrix (the last one ``a`` where needed), ``eps_p=None``;
        - first pass, float32 products, ``eps_p`` bounding the error of each
          against the exact value; either ``P[..., k, j] = q_j.m_k`` as above,
          or, for ``"center+l2"``, ``P[..., k, j] = q'_j.v_k`` with
          ``q' = q - a`` rounded to float32 and ``centred = (n, e)``:
          ``n`` approximates ``||q - a||`` to within ``e``.

        ``q_norm`` (``||q||``), ``eps_p`` and ``centred`` have the shape of
        ``P[..., 0, :]``; ``ep`` holds per-episode constants broadcastable to
        it (scalars) or to ``P[..., :W, :]`` (per class).
        """
        import torch

        W, g, inf = self.W, self.gamma, float("inf")
        extra = 0.0 if eps_p is None else eps_p
        # E64: float64 rounding here and in NearestClassCenter, per score;
        # E32: the float32 computations of the first pass, per score
        if self.has_a:
            R = q_norm + ep["a_norm"]
            if centred is None:  # (q - a).v and ||q - a||^2 by expansion
                dot_a = P[..., :W, :] - ep["av"]
                n2 = q_norm * q_norm - 2.0 * P[..., W, :] + ep["aa"]
                n2_err = g * R * R + 2.0 * extra
                n_err = 0.0
            else:
                dot_a = P
                n, n_err = centred
                n2 = n * n
                n2_err = g * n2
        if self.normalize is None and self.metric == "euclidean":
            scores = ep["vv"] - 2.0 * dot_a
            z_loc = (n2.clamp_min(0) + n2_err).sqrt() + n_err  # upper bound on ||q - a||
            dlt = ep["delta"] + g * R
            span = z_loc + ep["v_max"]
            E64 = g * (span * span + 2.0 * R * ep["v_max"]) + 2.0 * dlt * span + dlt * dlt
            E32 = 2.0 * extra
        else:
            if self.normalize == "center+l2":
                ok = (n2 > 4.0 * n2_err) & (n2 > 16.0 * n_err * n_err)
                n = torch.where(ok, n2, 1.0).sqrt()
                dot = dot_a / n.unsqueeze(-2)
                err64 = torch.where(ok, (g * R / n + g * R * R / n2) * ep["v_max"], inf)
                err32 = (extra + n_err * ep["v_max"]) / n
            else:  # "l2", or cosine on raw features: divide by ||q||
                n = torch.where(q_norm == 0, 1.0, q_norm)
                dot = P / n.unsqueeze(-2)
                err64 = 2.0 * g * ep["v_max"]
                err32 = extra / n
            if self.metric == "euclidean":
                scores = ep["vv"] - 2.0 * dot
                E64 = g * (1.0 + ep["v_max"]) ** 2 + 2.0 * (err64 + ep["delta"])
                E32 = 2.0 * err32
            else:
                scores = -dot
                E64 = g + err64 + ep["delta"]
                E32 = err32
        # two scores, two implementations: 4 E64 (+ 2 E32) would do; doubled
        tol = torch.nan_to_num(8.0 * E64 + 4.0 * E32, nan=inf)
        # best and second-best score; with a tie both are equal (margin 0), and
        # which index min() reports does not matter: the query is unsure
        two, pos = torch.topk(scores, 2, dim=-2, largest=False, sorted=True)
        sure = (two[..., 1, :] - two[..., 0, :]) > tol  # False for NaN / inf too
        return pos[..., 0, :], sure

    def __call__(self, support, query, first=0):
        """Run a batch.

        Parameters
        ----------
        support : torch.Tensor of shape (B, W, K), int64, on the device
        query : torch.Tensor of shape (B, W, Q), int64, on the device
        first : int
            Number of the batch's first episode (reported by :meth:`flush`).

        Returns
        -------
        correct : torch.Tensor of shape (B,)
            Number of queries per episode classified correctly, for certain.
        unsure : torch.Tensor of shape (B,), bool
            Episodes with a query whose two nearest centres are so close
            that rounding (here or in ``NearestClassCenter``) could swap them.

        Notes
        -----
        With the float32 first pass, the queries it leaves undecided are
        queued (``n_pending``) for :meth:`flush`, which settles them in one
        float64 pass for many batches: ``correct`` does not count them, and
        ``unsure`` is all False.
        """
        import torch

        B = support.shape[0]
        W, K, Q, d = self.W, self.K, self.Q, self.d
        f64 = torch.float64
        inf = float("inf")
        gamma = self.gamma
        normalize, metric = self.normalize, self.metric

        qidx = query.reshape(-1)
        q_norm = torch.index_select(self.norms, 0, qidx).view(B, W * Q)

        # --- supports (float64), in cache-sized sub-batches: normalise in
        # place, then class centres C, and the rounding scale delta of the
        # centres (and of anything built from them)
        C = self.C64[:B]
        delta = torch.empty(B, dtype=f64, device=C.device)
        if normalize == "center+l2":
            a = torch.empty(B, d, dtype=f64, device=C.device)
        step = self.sub_support
        for i in range(0, B, step):
            j = min(B, i + step)
            # shot-major (K, b, W, d): class sums over the outer axis (fast)
            sidx = support[i:j].permute(2, 0, 1).reshape(-1)
            S = self._gather(sidx, self.s64, self.s_raw).view(K, j - i, W, d)
            s_norm = torch.index_select(self.norms, 0, sidx).view(K, j - i, W)
            if normalize == "center+l2":
                # the support mean, as the mean of the class means (balanced)
                a_i = torch.matmul(self.avg_w, S.sum(dim=0).mul_(1.0 / K)).squeeze(1)
                a[i:j] = a_i
                a_n = torch.linalg.vector_norm(a_i, dim=1)
                S.sub_(a_i.unsqueeze(1))
                ns = torch.linalg.vector_norm(S, dim=3)
                S.mul_(torch.where(ns == 0, 1.0, ns).reciprocal_().unsqueeze(3))
                err_s = torch.where(ns == 0, inf, (s_norm + a_n.unsqueeze(1)) / ns)
            elif normalize == "l2":
                S.mul_(torch.where(s_norm == 0, 1.0, s_norm).reciprocal_().unsqueeze(3))
                err_s = (s_norm > 0).to(f64)
            else:
                err_s = s_norm
            torch.amax(err_s, dim=(0, 2), out=delta[i:j])
            torch.sum(S, dim=0, out=C[i:j])
        C.mul_(1.0 / K)  # class means
        delta.mul_(gamma)
        if normalize == "center+l2":
            a_norm = torch.linalg.vector_norm(a, dim=1)

        # --- centre matrix M = [v_1 .. v_W (, a)]
        M = self.M64[:B]
        V = M[:, :W]
        if normalize is None and metric == "euclidean":
            a = torch.matmul(self.avg_w, C).squeeze(1)  # reference point: mean of the centres
            a_norm = torch.linalg.vector_norm(a, dim=1)
            torch.sub(C, a.unsqueeze(1), out=V)
        elif metric == "cosine":
            cn = torch.linalg.vector_norm(C, dim=2)  # (B, W)
            torch.div(C, torch.where(cn == 0, 1.0, cn).unsqueeze(2), out=V)
            delta = torch.where(cn == 0, inf, delta.unsqueeze(1) / cn).amax(dim=1)
        else:
            V.copy_(C)
        v_norm = torch.linalg.vector_norm(V, dim=2)  # (B, W)
        vv = v_norm * v_norm
        v_max = v_norm.amax(dim=1)  # (B,)
        ep = {"vv": vv, "v_max": v_max, "delta": delta}
        if self.has_a:
            M[:, W] = a
            ep["av"] = torch.bmm(V, a.unsqueeze(2)).squeeze(2)  # (B, W)
            ep["aa"] = a_norm * a_norm
            ep["a_norm"] = a_norm

        # --- queries: gathered once and read once, by a batched product
        # (in sub-batches whose rows stay in cache between the two)
        # per-class constants (B, W, 1), scalars (B, 1): broadcast over queries
        batch_ep = {k: v.unsqueeze(-1) for k, v in ep.items()}
        step = self.sub_batch
        if self.fast32:
            # first pass in float32, from the float32 rows themselves; for
            # "center+l2" the queries are centred on a first (in float32),
            # which keeps the rounding relative to ||q - a||, not ||q||: the
            # expansion of ||q - a||^2 would lose too much there
            centre = normalize == "center+l2"
            M32 = self.M32[:B].copy_(M)
            rows32 = M32[:, :W] if centre else M32
            Pt = torch.empty(B, rows32.shape[1], W * Q, dtype=torch.float32, device=M.device)
            n_c = torch.empty(B, W * Q, dtype=torch.float32, device=M.device) if centre else None
            for i in range(0, B, step):
                j = min(B, i + step)
                Z = self._gather(qidx[i * W * Q : j * W * Q], self.q, self.q_raw)
                Z = Z.view(j - i, W * Q, d)
                if centre:
                    Z.sub_(M32[i:j, W].unsqueeze(1))
                    torch.linalg.vector_norm(Z, dim=2, out=n_c[i:j])
                torch.bmm(rows32[i:j], Z.transpose(1, 2), out=Pt[i:j])
            P = Pt.to(f64)  # (B, W or W + 1, WQ)
            if centre:
                n_c = n_c.to(f64)  # ||q'||, computed in float32
                # ||q' - (q - a)||: one rounding of q - a32, plus a32 - a
                e_z = self.two_u32 * (n_c + 2.0 * a_norm.unsqueeze(1)) + self.tiny32
                eps_p = (self.eps32 * n_c + e_z) * v_max.unsqueeze(1) + self.tiny32
                # n_c is within e_z + its own float32 rounding of ||q - a||
                n_err = e_z + self.eps32 * n_c
                pred, sure = self._scores(P, q_norm, batch_ep, eps_p, (n_c, n_err))
            else:
                m_max = torch.maximum(v_max, a_norm) if self.has_a else v_max
                eps_p = self.eps32 * q_norm * m_max.unsqueeze(1) + self.tiny32
                pred, sure = self._scores(P, q_norm, batch_ep, eps_p)
        else:
            Pt = torch.empty(B, M.shape[1], W * Q, dtype=f64, device=M.device)
            for i in range(0, B, step):
                j = min(B, i + step)
                Z = self._gather(qidx[i * W * Q : j * W * Q], self.q, self.q_raw)
                torch.bmm(M[i:j], Z.view(j - i, W * Q, d).transpose(1, 2), out=Pt[i:j])
            pred, sure = self._scores(Pt, q_norm, batch_ep)

        correct = ((pred == self.truth) & sure).sum(dim=1)
        if not self.fast32:
            return correct, ~sure.all(dim=1)
        if not bool(sure.all()):
            # undecided by the float32 pass: queued for the float64 pass
            flat = torch.nonzero(~sure.view(-1)).squeeze(1)
            bf = torch.div(flat, W * Q, rounding_mode="floor")
            # their products in float64 now, while M is at hand; scored later
            Zf = torch.index_select(self.Xt, 0, torch.index_select(qidx, 0, flat)).to(f64)
            Pf = torch.bmm(torch.index_select(M, 0, bf), Zf.unsqueeze(2)).squeeze(2)
            self._pending.append(
                {
                    "P": Pf,
                    "truth": torch.index_select(self.truth, 0, flat - bf * (W * Q)),
                    "q_norm": torch.index_select(q_norm.view(-1), 0, flat),
                    "ep": {k: torch.index_select(v, 0, bf) for k, v in ep.items()},
                    "episode": bf + first,
                    "support": torch.index_select(support, 0, bf),
                    "query": torch.index_select(query, 0, bf),
                }
            )
            self.n_pending += flat.numel()
        return correct, torch.zeros(B, dtype=torch.bool, device=correct.device)

    def flush(self):
        """Score the queued queries (float64 products computed when queued).

        Returns
        -------
        None, or ``(episode, correct, sure, support, query)``: numpy arrays,
        one entry per queued query: its episode (the ``first`` offset of its
        batch added), whether its nearest centre is the right class, whether
        that is certain (if not, the episode is unsure), and the episode's
        support and query indices.
        """
        import torch

        if not self._pending:
            return None
        pend, self._pending, self.n_pending = self._pending, [], 0
        cat = lambda key: torch.cat([p[key] for p in pend])  # noqa: E731
        # one query per column: per-class constants (W, n), scalars (n,)
        ep = {k: torch.cat([p["ep"][k] for p in pend]) for k in pend[0]["ep"]}
        ep = {k: v.t() if v.ndim == 2 else v for k, v in ep.items()}
        pf, sf = self._scores(cat("P").t(), cat("q_norm"), ep)
        return (
            cat("episode").cpu().numpy(),
            (pf == cat("truth")).cpu().numpy(),
            sf.cpu().numpy(),
            cat("support").cpu().numpy(),
            cat("query").cpu().numpy(),
        )


def _check_features(X):
    """Validate X: a finite 2-D numpy array (float) or torch tensor (kept as is)."""
    if is_torch_tensor(X):
        import torch

        if X.ndim != 2:
            raise ValueError(
                f"X must be 2-D (n_samples, n_features); got a tensor of shape {tuple(X.shape)}."
            )
        if X.is_complex() or X.dtype == torch.bool:
            raise ValueError(f"X must hold real numbers; got dtype {X.dtype}.")
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"X is empty (shape {tuple(X.shape)}).")
        if X.is_floating_point() and not bool(torch.isfinite(X).all()):
            raise ValueError("X contains NaN or infinity.")
        return X.detach()
    return check_array(X, dtype=[np.float64, np.float32], order="C", input_name="X")


def evaluate_episodes(
    X,
    y,
    cv=None,
    *,
    metric="euclidean",
    normalize=None,
    device=None,
    batch_size=None,
    n_jobs=None,
    return_cdnv=True,
    verbose=False,
):
    """Few-shot accuracy of the nearest-class-centre classifier over many episodes.

    The fast path of ``cross_val_score(NearestClassCenter(metric=...,
    normalize=...), X, y, cv=cv)`` for cached features: all episodes of
    ``cv`` are evaluated in vectorised batches (numpy arrays through torch on
    the CPU, torch tensors on their own device, CUDA included). The
    per-episode accuracies are exactly those of the ``cross_val_score`` path
    on the same :class:`EpisodeSplit` with an int ``random_state``: same
    episodes in the same order, same decision rule, same tie-breaking (the
    class first in sorted label order wins).

    Parameters
    ----------
    X : array-like or torch.Tensor of shape (n_samples, n_features)
        Frozen features, e.g. a backbone's output on the novel classes.
        Torch tensors are used in place, on their device.

    y : array-like or torch.Tensor of shape (n_samples,)
        Class labels (any hashable labels). They are copied to the host to
        draw the episodes.

    cv : EpisodeSplit, default=None
        The episodes. None means ``EpisodeSplit()`` (5-way 5-shot,
        15 queries, 600 episodes, a fresh random draw).

    metric : {"euclidean", "cosine"}, default="euclidean"
        Distance of :class:`~sknc.neighbors.NearestClassCenter`.

    normalize : {None, "l2", "center+l2"}, default=None
        Feature normalisation of :class:`~sknc.neighbors.NearestClassCenter`;
        ``"center+l2"`` centres on the support mean of each episode.

    device : str, torch.device or None, default=None
        Where to compute. None: the device of ``X`` (the CPU for numpy
        input). Otherwise ``"auto"``, ``"cpu"``, ``"cuda"``, ...; the rows of
        the classes the episodes draw from are copied there once.

    batch_size : int, default=None
        Episodes per vectorised batch. None picks one that covers about 4
        million feature values (support and query rows) on the CPU, where the
        rows are then gathered in cache-sized sub-batches, and 16 times more
        on other devices.

    n_jobs : int, default=None
        Threads evaluating batches in parallel on the CPU. None means as many
        as torch's intra-op setting (``torch.get_num_threads()``, which
        these threads replace during the call), -1 all cores. Ignored on
        other devices.

    return_cdnv : bool, default=True
        Also compute the CDNV (:func:`sknc.metrics.cdnv`) of the features of
        the classes the episodes draw from, once, so that few-shot accuracy
        and collapse on the novel classes are reported together.

    verbose : bool, default=False
        Show a tqdm progress bar over the episodes.

    Returns
    -------
    result : FewShotResult
        Per-episode accuracies ``scores`` and the summary ``mean``, ``std``
        (``ddof=0``), ``ci95 = 1.96 * std / sqrt(n_episodes)``, and ``cdnv``.

    See Also
    --------
    EpisodeSplit : the episode sampler, usable with any classifier.
    sknc.neighbors.NearestClassCenter : the classifier evaluated here.

    Notes
    -----
    How the accuracies stay exactly equal although the two paths round
    differently (batched products, other summation orders): each query gets
    a rigorous, generous bound on the rounding error of its scores in either
    path. When the two nearest centres are further apart than that, both
    paths necessarily pick the same class. For float32 (or half) features
    the query products are first computed in float32, from the float32 rows
    themselves, and only the queries this leaves undecided are recomputed
    in float64 (the supports and centres are always float64, like
    ``NearestClassCenter``, which computes in float64). A query still
    undecided after that (an exact tie, for instance) makes its episode be
    evaluated by ``NearestClassCenter`` itself on the host, as
    ``cross_val_score`` would (``n_exact`` counts those episodes). Float32
    matrix products are only trusted while torch keeps them in IEEE float32
    (``torch.get_float32_matmul_precision() == "highest"``, no TF32);
    otherwise everything runs in float64.

    Memory is bounded by the batch: ``batch_size * n_way * (n_shot +
    n_query) * n_features`` gathered features per thread; ``X`` is never
    copied per episode. On the CPU, torch's intra-op thread count is set to
    1 for the duration of the call (and restored): these many small
    operations run faster on one thread each, in parallel over batches
    (``n_jobs`` threads), and do not stall when other processes share the
    cores.

    The CDNV is that of the features as given (before any ``normalize``),
    over all samples of the classes the episodes draw from.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.model_selection import cross_val_score
    >>> from sknc.model_selection import EpisodeSplit, evaluate_episodes
    >>> from sknc.neighbors import NearestClassCenter
    >>> X, y = load_digits(return_X_y=True)
    >>> cv = EpisodeSplit(n_way=5, n_shot=1, n_query=15, n_episodes=200,
    ...                   classes=[5, 6, 7, 8, 9], random_state=0)
    >>> res = evaluate_episodes(X, y, cv, return_cdnv=False)
    >>> res.scores.shape
    (200,)
    >>> slow = cross_val_score(NearestClassCenter(), X, y, cv=cv)
    >>> bool((res.scores == slow).all())
    True
    """
    import torch
    from tqdm.auto import tqdm

    if cv is None:
        cv = EpisodeSplit()
    if not isinstance(cv, EpisodeSplit):
        raise TypeError(
            f"cv must be an EpisodeSplit (it provides the episodes); got {type(cv).__name__}. "
            "Use cross_val_score for other splitters."
        )
    _validate_ncc_params(metric, normalize)
    if batch_size is not None and (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, numbers.Integral)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be None or an integer >= 1; got {batch_size!r}.")
    n_jobs = thread_budget(n_jobs)
    n_way, n_shot, n_query, n_episodes = cv._check_params()

    X = _check_features(X)
    y = cv._check_y(None, y)
    check_consistent_length(X, y)
    labels, members, starts, counts, eligible = cv._class_pool(y)

    # rows of the classes episodes draw from (for CDNV, and to move to a device)
    if eligible.size == labels.size:
        rows = None
    else:
        rows = np.sort(
            np.concatenate([members[starts[c] : starts[c] + counts[c]] for c in eligible])
        )

    if is_torch_tensor(X):
        target = X.device if device is None else resolve_device(device)
        Xt = X
    else:
        target = torch.device("cpu") if device is None else resolve_device(device)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not writable.*")
            Xt = torch.from_numpy(X)  # read only, never written
    remap = None
    if Xt.device != target:
        if rows is None:
            Xt = Xt.to(target)
        else:
            remap = np.full(y.shape[0], -1, dtype=np.int64)
            remap[rows] = np.arange(rows.size)
            Xt = Xt[torch.from_numpy(rows).to(Xt.device)].to(target)
    on_cpu = target.type == "cpu"
    if not on_cpu:
        n_jobs = 1

    n_features = Xt.shape[1]
    if batch_size is None:
        per_episode = n_way * (n_shot + n_query) * n_features
        batch_size = max(1, (_BATCH_ELEMENTS if on_cpu else 16 * _BATCH_ELEMENTS) // per_episode)
    batch_size = min(batch_size, n_episodes)

    correct = np.zeros(n_episodes, dtype=np.int64)
    unsure_episodes = {}  # position -> (support, query) indices into X

    def batches():
        first = 0
        for support, query in cv._iter_chunks(y):
            for b in range(0, support.shape[0], batch_size):
                yield first + b, support[b : b + batch_size], query[b : b + batch_size]
            first += support.shape[0]

    with ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        # tiny ops: one thread each, parallel over batches of episodes
        stack.enter_context(single_thread())
        norms = _row_norms(Xt, rows if (rows is not None and remap is None) else None)
        bar = stack.enter_context(
            tqdm(total=n_episodes, disable=not verbose, desc="episodes", unit="ep")
        )
        kernels = queue.SimpleQueue()
        for _ in range(n_jobs):
            kernels.put(
                _EpisodeKernel(Xt, norms, n_way, n_shot, n_query, batch_size, metric, normalize)
            )

        def run(job):
            first, s, q = job
            if remap is not None:
                s, q = remap[s], remap[q]
            st = torch.from_numpy(s.astype(np.int64, copy=False)).to(target)
            qt = torch.from_numpy(q.astype(np.int64, copy=False)).to(target)
            kernel = kernels.get()
            try:
                with torch.inference_mode():  # thread-local: set in every worker
                    c, u = kernel(st, qt, first)
                    late = kernel.flush() if kernel.n_pending >= _PENDING_QUERIES else None
                return job, (first, c.cpu().numpy(), u.cpu().numpy(), late)
            finally:
                kernels.put(kernel)

        def record(result, job):
            first, c, u, late = result
            correct[first : first + c.size] += c
            for i in np.flatnonzero(u):
                unsure_episodes[first + i] = (job[1][i], job[2][i])
            bar.update(c.size)
            if late is not None:
                record_late(late)

        def record_late(late):
            episode, ok, sure, sup, qry = late
            np.add.at(correct, episode[sure], ok[sure])
            for i in np.flatnonzero(~sure):
                s, q = sup[i], qry[i]
                if remap is not None:  # back to indices into X
                    s, q = rows[s], rows[q]
                unsure_episodes[episode[i]] = (s, q)

        results = stack.enter_context(closing(map_threads(run, batches(), n_jobs)))
        for job, result in results:
            record(result, job)
        while not kernels.empty():
            late = kernels.get().flush()
            if late is not None:
                record_late(late)

    scores = correct / float(n_way * n_query)
    # near-ties: settle them with the estimator itself, as cross_val_score would
    if unsure_episodes:
        est = NearestClassCenter(metric=metric, normalize=normalize)
        for pos, (s, q) in sorted(unsure_episodes.items()):
            s, q = s.ravel(), q.ravel()
            est.fit(_host_rows(X, s), y[s])
            scores[pos] = accuracy_score(y[q], est.predict(_host_rows(X, q)))

    std = float(np.std(scores))
    cdnv_value = None
    if return_cdnv:
        cdnv_value = _cdnv(X, Xt, y, rows, remap, n_jobs)
    return FewShotResult(
        scores=scores,
        mean=float(np.mean(scores)),
        std=std,
        ci95=1.96 * std / np.sqrt(n_episodes),
        n_episodes=n_episodes,
        n_way=n_way,
        n_shot=n_shot,
        n_query=n_query,
        classes=labels[eligible],
        cdnv=cdnv_value,
        n_exact=len(unsure_episodes),
    )


def _cdnv(X, Xt, y, rows, remap, n_jobs):
    """CDNV of the rows of the classes the episodes draw from, in the thread policy.

    CPU features go through the numpy path of :func:`sknc.metrics.cdnv`
    (a view, no copy), which spreads its passes over ``n_jobs``
    single-threaded worker threads.
    """
    from ..metrics import cdnv

    if remap is not None:  # Xt holds exactly those rows, on another device
        feats, labels = Xt, y[rows]
    elif rows is None:
        feats, labels = Xt, y
    else:
        feats, labels = _take_rows(Xt, rows), y[rows]
    if feats.device.type == "cpu" and feats.dtype in _numpy_dtypes():
        feats = feats.numpy()
    with thread_limits(n_jobs):
        return float(cdnv(feats, labels))


def _numpy_dtypes():
    import torch

    return (torch.float32, torch.float64, torch.float16)


def _take_rows(X, idx):
    """Rows ``idx`` of a numpy array or torch tensor (on its device)."""
    if is_torch_tensor(X):
        import torch

        return X[torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(X.device)]
    return X[idx]


def _host_rows(X, idx):
    """Rows ``idx`` of X as a numpy array, as ``cross_val_score`` would index them.

    bfloat16 (which numpy lacks) is widened to float32, exactly.
    """
    rows = _take_rows(X, idx)
    if is_torch_tensor(rows):
        import torch

        if rows.dtype == torch.bfloat16:
            rows = rows.to(torch.float32)
    return to_numpy(rows)
