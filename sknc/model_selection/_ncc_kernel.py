"""The vectorised nearest-class-centre kernel behind :func:`evaluate_episodes`.

:class:`_EpisodeKernel` classifies the queries of a batch of episodes with
the decision rule of :class:`~sknc.neighbors.NearestClassCenter`, and tells
for each query whether rounding (its own or ``NearestClassCenter``'s) could
change the decision; the scheduling around it (batches, threads, the float64
flushes, near-tie episodes) lives in ``_fewshot.py``.
"""

# On the CPU, support and query rows are gathered in sub-batches of about this
# many bytes, which stay in cache until they are used.
from ..utils._rounding import TINY32, U32, dot_error32, gamma64, safe_margin

_SUB_BATCH_BYTES = 1 << 19
_SUPPORT_BATCH_BYTES = 1 << 19

# The first pass sums the supports in float32 unless the features' common
# offset exceeds this many times their spread (see _offset_ratio).
_SUMS32_MAX_OFFSET = 64.0


def _row_norms(Xt, rows=None, out=None):
    """Float64 Euclidean norms of the rows of ``Xt`` (only ``rows`` if given, others 0).

    Computed in chunks on ``Xt``'s device, without a float64 copy of ``Xt``;
    into ``out`` (float64, ``len(Xt)``) if given (only the entries of
    ``rows`` are written then).
    """
    import torch

    n, d = Xt.shape
    if out is None:
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


def _offset_ratio(Xt, rows=None, n_sample=1024):
    """Norm of the mean row over the spread of the rows, on a sample of ``rows``.

    About ``||mean|| / sqrt(mean ||x - mean||^2)`` over about ``n_sample``
    rows (fewer for very wide rows) evenly spaced in ``rows`` (all rows of ``Xt`` if None); ``inf``
    when the sampled rows are all equal. Large for features that share a
    big common offset: there, float32 class sums (whose rounding scales
    with ``||x||``) would leave most queries to the float64 pass, so the
    kernel keeps its float64 centres (a choice of speed only).
    """
    import torch

    n = Xt.shape[0] if rows is None else len(rows)
    n_sample = _sample_rows(n_sample, Xt.shape[1])
    idx = torch.arange(0, n, max(1, n // n_sample), device=Xt.device)
    if rows is not None:
        idx = torch.as_tensor(rows, device=Xt.device)[idx]
    S = Xt[idx].to(torch.float64)
    m = S.mean(dim=0)
    spread = float(torch.linalg.vector_norm(S - m, dim=1).square().mean().sqrt())
    size = float(torch.linalg.vector_norm(m))
    return size / spread if spread > 0 else float("inf")


def _sample_rows(n_sample, n_features, budget=1 << 24):
    """Rows of a float64 sample: ``n_sample``, fewer if they exceed ``budget`` bytes (16 MB).

    At least 16.
    """
    return max(16, min(n_sample, budget // (8 * n_features)))


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
    implementations need), both implementations pick the same class. The
    constants and this margin are derived once, in ``sknc.utils._rounding``,
    and shared with ``NearestClassCenter``.

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

    def __init__(
        self, Xt, norms, n_way, n_shot, n_query, batch_size, metric, normalize, sums32=True
    ):
        import torch

        self.Xt, self.norms = Xt, norms
        self.W, self.K, self.Q = n_way, n_shot, n_query
        self.metric, self.normalize = metric, normalize
        d = Xt.shape[1]
        f64, f32 = torch.float64, torch.float32
        dev = Xt.device
        self.d = d
        # bounds: see sknc.utils._rounding (the sums of the centres add W K terms)
        self.gamma = gamma64(d + n_way * n_shot)
        # the products also need the extra vector a
        self.has_a = normalize == "center+l2" or (normalize is None and metric == "euclidean")
        n_m = n_way + 1 if self.has_a else n_way
        self.fast32 = Xt.dtype in (f32, torch.float16, torch.bfloat16) and _ieee_fp32_matmul(dev)
        # rigorous bound for a float32 dot product of length d (any summation
        # order), including the rounding of the float64 vector to float32
        self.eps32 = dot_error32(d)
        self.two_u32 = 2.0 * U32
        self.tiny32 = 4.0 * d * TINY32  # flush-to-zero of tiny products

        # on the CPU, supports are gathered (in float64) in cache-sized sub-batches
        per_ep = n_way * n_shot * d * 8
        self.sub_support = (
            max(1, min(batch_size, _SUPPORT_BATCH_BYTES // per_ep))
            if dev.type == "cpu"
            else batch_size
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
        self.q_t = self.q.view(self.sub_batch, n_way * n_query, d).transpose(1, 2)
        self.q_raw = (
            torch.empty(n_q, d, dtype=Xt.dtype, device=dev) if Xt.dtype != q_dtype else None
        )
        self.M64 = torch.empty(batch_size, n_m, d, dtype=f64, device=dev)
        self.C64 = torch.empty(batch_size, n_way, d, dtype=f64, device=dev)
        self.M32 = torch.empty(batch_size, n_m, d, dtype=f32, device=dev) if self.fast32 else None
        # first-pass class sums in float32, straight from the rows (no
        # gathered copy); the float64 pass recomputes its centres exactly
        self.sums32 = sums32 and self.fast32 and Xt.dtype == f32 and normalize != "center+l2"
        # bound on the error of a float32 class mean per unit of the largest
        # (normalised) support norm; see _centres32
        self.err_sums32 = dot_error32(n_shot + 2)
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
          against the exact value (a pair ``(e_v, e_a)`` when the products
          with the class vectors and with ``a`` have separate bounds: the
          latter only enter ``||q - a||``, not the score differences); either ``P[..., k, j] = q_j.m_k`` as above,
          or, for ``"center+l2"``, ``P[..., k, j] = q'_j.v_k`` with
          ``q' = q - a`` rounded to float32 and ``centred = (n, e)``:
          ``n`` approximates ``||q - a||`` to within ``e``.

        ``q_norm`` (``||q||``), ``eps_p`` and ``centred`` have the shape of
        ``P[..., 0, :]``; ``ep`` holds per-episode constants broadcastable to
        it (scalars) or to ``P[..., :W, :]`` (per class).
        """
        import torch

        W, g, inf = self.W, self.gamma, float("inf")
        if eps_p is None:
            extra = extra_a = 0.0
        elif isinstance(eps_p, tuple):
            extra, extra_a = eps_p
        else:
            extra = extra_a = eps_p
        # E64: float64 rounding here and in NearestClassCenter, per score;
        # E32: the float32 computations of the first pass, per score
        if self.has_a:
            R = q_norm + ep["a_norm"]
            if centred is None:  # (q - a).v and ||q - a||^2 by expansion
                dot_a = P[..., :W, :] - ep["av"]
                n2 = q_norm * q_norm - 2.0 * P[..., W, :] + ep["aa"]
                n2_err = g * R * R + 2.0 * extra_a
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
        tol = torch.nan_to_num(safe_margin(E64, E32), nan=inf)
        # best and second-best score (the best masked out; faster than topk);
        # with a tie both are equal (margin 0), and which index min() reports
        # does not matter: the query is unsure. min() propagates NaN.
        best, pos = scores.min(dim=-2)
        second = scores.scatter(-2, pos.unsqueeze(-2), inf).amin(dim=-2)
        sure = (second - best) > tol  # False for NaN / inf too
        return pos, sure

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

        B, W, Q = support.shape[0], self.W, self.Q
        qidx = query.reshape(-1)
        q_norm = torch.index_select(self.norms, 0, qidx).view(B, W * Q)
        M = None
        if self.sums32:
            M32, ep = self._centres32(support)
        else:
            M, ep = self._centre_matrix(*self._centres(support))
            M32 = self.M32[:B].copy_(M) if self.fast32 else None
        if self.fast32:
            pred, sure = self._first_pass32(qidx, q_norm, M32, ep)
        else:
            pred, sure = self._pass64(qidx, q_norm, M, ep)
        correct = ((pred == self.truth) & sure).sum(dim=1)
        if not self.fast32:
            return correct, ~sure.all(dim=1)
        if not bool(sure.all()):
            self._queue_undecided(~sure, q_norm, support, query, first)
        return correct, torch.zeros(B, dtype=torch.bool, device=correct.device)

    def _centres(self, support):
        """Class centres (float64) of a batch, and their rounding scale.

        Supports are gathered in cache-sized sub-batches, normalised in place
        where asked, and averaged per class.

        Returns
        -------
        C : torch.Tensor of shape (B, W, d), float64
            The class centres.
        delta : torch.Tensor of shape (B,)
            ``gamma`` times the largest magnitude a centre coordinate was
            computed from: the rounding scale of the centres and of
            anything built from them.
        a : torch.Tensor of shape (B, d) or None
            The support mean, for ``"center+l2"``.
        """
        import torch

        B, W, K, d = support.shape[0], self.W, self.K, self.d
        f64, inf, normalize = torch.float64, float("inf"), self.normalize
        C = self.C64[:B]
        delta = torch.empty(B, dtype=f64, device=C.device)
        a = torch.empty(B, d, dtype=f64, device=C.device) if normalize == "center+l2" else None
        if normalize != "center+l2":  # the scale needs the support norms only
            s_norm = torch.index_select(self.norms, 0, support.reshape(-1)).view(B, W * K)
            torch.amax(s_norm if normalize is None else (s_norm > 0).to(f64), dim=1, out=delta)
        step = self.sub_support
        for i in range(0, B, step):
            j = min(B, i + step)
            # shot-major (K, b, W, d): class sums over the outer axis (fast)
            sidx = support[i:j].permute(2, 0, 1).reshape(-1)
            S = self._gather(sidx, self.s64, self.s_raw).view(K, j - i, W, d)
            if normalize == "center+l2":
                s_norm = torch.index_select(self.norms, 0, sidx).view(K, j - i, W)
                # the support mean, as the mean of the class means (balanced)
                a_i = torch.matmul(self.avg_w, S.sum(dim=0).mul_(1.0 / K)).squeeze(1)
                a[i:j] = a_i
                a_n = torch.linalg.vector_norm(a_i, dim=1)
                S.sub_(a_i.unsqueeze(1))
                ns = torch.linalg.vector_norm(S, dim=3)
                S.mul_(torch.where(ns == 0, 1.0, ns).reciprocal_().unsqueeze(3))
                err_s = torch.where(ns == 0, inf, (s_norm + a_n.unsqueeze(1)) / ns)
                torch.amax(err_s, dim=(0, 2), out=delta[i:j])
            elif normalize == "l2":
                s_norm = torch.index_select(self.norms, 0, sidx).view(K, j - i, W, 1)
                S.mul_(torch.where(s_norm == 0, 1.0, s_norm).reciprocal_())
            torch.sum(S, dim=0, out=C[i:j])
        C.mul_(1.0 / K)  # class means
        delta.mul_(self.gamma)
        return C, delta, a

    def _centres32(self, support):
        """The float32 centre matrix of the first pass and its constants.

        The class sums are computed in float32 by ``embedding_bag`` straight
        from the rows of ``Xt`` (float32), weighted by ``1/||x||`` (rounded to
        float32) for ``"l2"``; no support row is copied. Returns ``(M32,
        ep)``, as :meth:`_centre_matrix` (``M32`` float32); the float64 pass
        recomputes its centres with :meth:`_centres`.

        ``delta`` bounds the distance of the centres the first pass uses to
        the exact ones, so that its bound holds for the exact centres (and
        ``NearestClassCenter``'s). With ``u = u32``, ``s = max ||w x||``
        over the support rows (``w = 1``, or ``1/||x||`` for ``"l2"``) and
        coordinatewise: ``fl(w)`` and ``fl(fl(w) x)`` are within ``(2u +
        u^2) |w x|``; the K-term float32 sum adds ``gamma_{K-1}`` of the sum
        of the magnitudes; ``* fl(1/K)`` another ``2u + u^2``: in all, the
        class mean is within ``gamma_{K+4} s`` (``dot_error32(K + 2)``). The
        euclidean rule on raw features uses the centres ``a + fl(c - a)``
        with ``a`` the float32 mean of the centres: any reference point
        works, and rounding ``c - a`` adds ``u ||c - a||``, counted as
        ``2 u v_max``. Everything after that is float64, covered by the
        float64 scale ``gamma * s`` as in :meth:`_centres`.
        """
        import torch

        B, W, K, d = support.shape[0], self.W, self.K, self.d
        f64 = torch.float64
        flat = support.reshape(B * W, K)
        s_norm = torch.index_select(self.norms, 0, flat.reshape(-1)).view(B, W * K)
        weights = None
        if self.normalize == "l2":
            scale = (s_norm > 0).to(f64).amax(dim=1)
            weights = torch.where(s_norm == 0, 1.0, s_norm).reciprocal_()
            weights = weights.to(torch.float32).view(B * W, K)
        else:
            scale = s_norm.amax(dim=1)
        delta = scale.mul_(self.gamma + self.err_sums32)
        sums = torch.nn.functional.embedding_bag(
            flat, self.Xt, mode="sum", per_sample_weights=weights
        )
        C32 = sums.view(B, W, d).mul_(1.0 / K)  # float32 class means
        M32 = self.M32[:B]
        if self.normalize is not None or self.metric != "euclidean":
            M, ep = self._centre_matrix(self.C64[:B].copy_(C32), delta, None)
            return M32.copy_(M), ep
        # M32 = [v_1 .. v_W, a] in float32 holds the centres c = a + v_k
        # (within the bound of delta: the roundings of the mean a and of
        # c32 - a are covered by err_sums32); the constants from its exact
        # float64 values
        a32 = torch.mean(C32, dim=1, out=M32[:, W])
        torch.sub(C32, a32.unsqueeze(1), out=M32[:, :W])
        M = M32.to(f64)  # exact
        sq = torch.linalg.vector_norm(M, dim=2).square_()  # ||v_k||^2 and ||a||^2
        av = torch.bmm(M[:, :W], M[:, W].unsqueeze(2)).squeeze(2)
        v_max = sq[:, :W].amax(dim=1).sqrt_()
        a_norm = sq[:, W].sqrt()
        # the rounding of c32 - a moves the centre by at most u32 ||v||
        delta.add_(v_max, alpha=self.two_u32)
        ep = {"vv": sq[:, :W], "v_max": v_max, "delta": delta, "av": av}
        ep["aa"] = sq[:, W]
        ep["a_norm"] = a_norm
        return M32, ep

    def _centre_matrix(self, C, delta, a):
        """The centre matrix ``M = [v_1 .. v_W (, a)]`` and per-episode constants.

        Returns ``M`` of shape (B, W or W + 1, d), float64, and a dict of
        per-episode constants: ``vv`` (``||v_k||^2``, (B, W)), ``v_max``,
        ``delta`` (B,) and, where ``M`` holds ``a``: ``av`` (``a.v_k``),
        ``aa`` and ``a_norm``.
        """
        import torch

        B, W, inf = C.shape[0], self.W, float("inf")
        M = self.M64[:B]
        V = M[:, :W]
        if self.normalize is None and self.metric == "euclidean":
            a = torch.matmul(self.avg_w, C).squeeze(1)  # reference point: mean of the centres
            torch.sub(C, a.unsqueeze(1), out=V)
        elif self.metric == "cosine":
            cn = torch.linalg.vector_norm(C, dim=2)  # (B, W)
            torch.div(C, torch.where(cn == 0, 1.0, cn).unsqueeze(2), out=V)
            delta = torch.where(cn == 0, inf, delta.unsqueeze(1) / cn).amax(dim=1)
        else:
            V.copy_(C)
        v_norm = torch.linalg.vector_norm(V, dim=2)  # (B, W)
        ep = {"vv": v_norm * v_norm, "v_max": v_norm.amax(dim=1), "delta": delta}
        if self.has_a:
            a_norm = torch.linalg.vector_norm(a, dim=1)
            M[:, W] = a
            ep["av"] = torch.bmm(V, a.unsqueeze(2)).squeeze(2)  # (B, W)
            ep["aa"] = a_norm * a_norm
            ep["a_norm"] = a_norm
        return M, ep

    def _pass64(self, qidx, q_norm, M, ep):
        """Scores of all queries from float64 products; (best class, certain)."""
        import torch

        B, WQ = M.shape[0], self.W * self.Q
        Pt = torch.empty(B, M.shape[1], WQ, dtype=torch.float64, device=M.device)
        # queries gathered once and read once, in sub-batches that stay in cache
        self._products(qidx, M, Pt)
        return self._scores(Pt, q_norm, _per_query(ep))

    def _products(self, qidx, rows, out):
        """``out[b] = rows[b] @ Z_b^T`` with ``Z_b`` the query rows of episode ``b``.

        The queries are gathered once and read once, in sub-batches that stay
        in cache; few operations per sub-batch (their dispatch costs as much
        as the work at these sizes).
        """
        import torch

        WQ, d, step, Xt = self.W * self.Q, self.d, self.sub_batch, self.Xt
        for idx, m, p in zip(qidx.split(step * WQ), rows.split(step), out.split(step)):
            b = m.shape[0]
            if b == step and self.q_raw is None:
                torch.index_select(Xt, 0, idx, out=self.q)
                torch.bmm(m, self.q_t, out=p)
            else:
                Z = self._gather(idx, self.q, self.q_raw)
                torch.bmm(m, Z.view(b, WQ, d).transpose(1, 2), out=p)

    def _first_pass32(self, qidx, q_norm, M32, ep):
        """Scores of all queries from float32 products, with their wider bound.

        The products are computed from the float32 rows themselves. For
        ``"center+l2"`` the queries are first centred on ``a`` (in float32),
        which keeps the rounding relative to ``||q - a||``, not ``||q||``:
        the expansion of ``||q - a||^2`` would lose too much there.
        """
        import torch

        B, W, WQ, d = M32.shape[0], self.W, self.W * self.Q, self.d
        f32, f64 = torch.float32, torch.float64
        centre = self.normalize == "center+l2"
        rows32 = M32[:, :W] if centre else M32
        Pt = torch.empty(B, rows32.shape[1], WQ, dtype=f32, device=M32.device)
        n_c = torch.empty(B, WQ, dtype=f32, device=M32.device) if centre else None
        if centre:
            step = self.sub_batch
            for i in range(0, B, step):
                j = min(B, i + step)
                Z = self._gather(qidx[i * WQ : j * WQ], self.q, self.q_raw).view(j - i, WQ, d)
                Z.sub_(M32[i:j, W].unsqueeze(1))
                torch.linalg.vector_norm(Z, dim=2, out=n_c[i:j])
                torch.bmm(rows32[i:j], Z.transpose(1, 2), out=Pt[i:j])
        else:
            self._products(qidx, rows32, Pt)
        P = Pt.to(f64)  # (B, W or W + 1, WQ)
        v_max = ep["v_max"].unsqueeze(1)
        if centre:
            n_c = n_c.to(f64)  # ||q'||, computed in float32
            # ||q' - (q - a)||: one rounding of q - a32, plus a32 - a
            e_z = self.two_u32 * (n_c + 2.0 * ep["a_norm"].unsqueeze(1)) + self.tiny32
            eps_p = (self.eps32 * n_c + e_z) * v_max + self.tiny32
            # n_c is within e_z + its own float32 rounding of ||q - a||
            n_err = e_z + self.eps32 * n_c
            return self._scores(P, q_norm, _per_query(ep), eps_p, (n_c, n_err))
        # the class rows' error bounds the score differences; a's error only
        # the bound on ||q - a||
        eps_p = self.eps32 * q_norm * v_max + self.tiny32
        if self.has_a:
            eps_p = (eps_p, self.eps32 * q_norm * ep["a_norm"].unsqueeze(1) + self.tiny32)
        return self._scores(P, q_norm, _per_query(ep), eps_p)

    def _queue_undecided(self, undecided, q_norm, support, query, first):
        """Queue the queries the float32 pass left undecided for :meth:`flush`.

        Only their positions and their episodes are kept: :meth:`flush`
        recomputes the exact float64 centres of those episodes, for all
        queued batches at once.
        """
        import torch

        WQ = self.W * self.Q
        flat = torch.nonzero(undecided.view(-1)).squeeze(1)
        bf = torch.div(flat, WQ, rounding_mode="floor")
        episodes, local = torch.unique(bf, return_inverse=True)
        self._pending.append(
            {
                "support": torch.index_select(support, 0, episodes),
                "query": torch.index_select(query, 0, episodes),
                "episode": episodes + first,
                "local": local,  # the query's episode, among ``episodes``
                "pos": flat - bf * WQ,  # the query's position in its episode
                "q_norm": torch.index_select(q_norm.view(-1), 0, flat),
            }
        )
        self.n_pending += flat.numel()

    def flush(self):
        """Score the queued queries in float64, from their episodes' exact centres.

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
        support, query, pos, q_norm = cat("support"), cat("query"), cat("pos"), cat("q_norm")
        # queries are in episode order: local indices offset per batch
        offsets = [0]
        for p in pend[:-1]:
            offsets.append(offsets[-1] + p["episode"].numel())
        local = torch.cat([p["local"] + o for p, o in zip(pend, offsets)])
        qrows = query.view(query.shape[0], -1)
        P = ep = None
        step = self.M64.shape[0]  # the buffers' batch size
        for i in range(0, support.shape[0], step):
            j = min(support.shape[0], i + step)
            lo, hi = (
                int(v) for v in torch.searchsorted(local, torch.tensor([i, j], device=local.device))
            )
            if lo == hi:
                continue
            M, ep_i = self._centre_matrix(*self._centres(support[i:j]))
            li, pi = local[lo:hi], pos[lo:hi]
            Z = self.Xt[qrows[li, pi]].to(torch.float64)
            P_i = torch.bmm(M[li - i], Z.unsqueeze(2)).squeeze(2)
            if P is None:
                P = torch.empty(pos.numel(), P_i.shape[1], dtype=P_i.dtype, device=P_i.device)
                ep = {
                    k: torch.empty((pos.numel(),) + v.shape[1:], dtype=v.dtype, device=v.device)
                    for k, v in ep_i.items()
                }
            P[lo:hi] = P_i
            for k, v in ep_i.items():
                ep[k][lo:hi] = v[li - i]
        # one query per column: per-class constants (W, n), scalars (n,)
        ep = {k: v.t() if v.ndim == 2 else v for k, v in ep.items()}
        pf, sf = self._scores(P.t(), q_norm, ep)
        truth = torch.div(pos, self.Q, rounding_mode="floor")
        return (
            cat("episode")[local].cpu().numpy(),
            (pf == truth).cpu().numpy(),
            sf.cpu().numpy(),
            support[local].cpu().numpy(),
            query[local].cpu().numpy(),
        )


def _per_query(ep):
    """Per-episode constants broadcastable over the query axis of the products."""
    return {key: value.unsqueeze(-1) for key, value in ep.items()}
