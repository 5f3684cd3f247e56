"""Vectorised few-shot evaluation of the nearest-class-centre classifier."""

import numbers
import queue
import warnings
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import accuracy_score
from sklearn.utils import check_array
from sklearn.utils.validation import check_consistent_length

from ..neighbors import NearestClassCenter
from ..neighbors._nearest_class_center import _validate_ncc_params
from ..utils import (
    is_torch_tensor,
    resolve_device,
    single_thread,
    thread_budget,
    thread_limits,
    to_numpy,
)
from . import _ncc_kernel
from ._episodes import EpisodeSplit
from ._ncc_kernel import _EpisodeKernel, _offset_ratio, _row_norms

# Queries left undecided by the float32 pass are settled in float64 once this
# many are queued (or at the end).
_PENDING_QUERIES = 4096

# Size (in elements) of the support + query features of one batch of episodes
# on the CPU (about 160 episodes of 5-way 5-shot 15-query on 512-d features;
# they are gathered in cache-sized sub-batches, or not at all; fewer, larger
# batches pay less per-operation overhead); 16 times that on GPUs.
_BATCH_ELEMENTS = 1 << 23


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
            f"FewShotResult(n_episodes={self.n_episodes}, n_query={self.n_query})\n"
            f"  {self.n_way}-way {self.n_shot}-shot: {100 * self.mean:.1f}% "
            f"\u00b1 {100 * self.ci95:.1f}%"
        )
        if self.cdnv is not None:
            text += f" (CDNV {self.cdnv:.3g})"
        return text

    def to_frame(self):
        """The episode accuracies as a ``pandas.DataFrame``: columns ``episode``, ``accuracy``.

        Returns
        -------
        pandas.DataFrame
            One row per episode, in the order ``cv.split`` yields them.
        """
        from ..utils._results import import_pandas

        pd = import_pandas("use .scores or .as_dict() instead")
        return pd.DataFrame({"episode": np.arange(len(self.scores)), "accuracy": self.scores})

    def plot(self, ax=None):
        """Histogram of the episode accuracies (percent), with the mean and its 95% interval.

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None
            Where to draw; None creates a new figure.

        Returns
        -------
        matplotlib.axes.Axes
            The axes drawn on.

        Examples
        --------
        >>> import numpy as np
        >>> from sknc.model_selection import EpisodeSplit, evaluate_episodes
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat(np.arange(6), 10)
        >>> X = rng.normal(size=(60, 4)) + 2 * rng.normal(size=(6, 4))[y]
        >>> result = evaluate_episodes(X, y, EpisodeSplit(3, 1, n_query=5, n_episodes=50,
        ...                                                random_state=0))
        >>> ax = result.plot()
        >>> ax.get_xlabel()
        'episode accuracy (%)'
        """
        from ..utils._plotting import _new_axes

        ax = _new_axes(ax)
        scores = 100 * np.asarray(self.scores, dtype=float)
        n_query = max(int(self.n_way) * int(self.n_query), 1)
        edges = np.linspace(0, 100, min(n_query, 50) + 2)  # accuracies are k / n_query
        ax.hist(scores, bins=edges, color="C0", alpha=0.7)
        mean, half = 100 * self.mean, 100 * self.ci95
        ax.axvspan(mean - half, mean + half, color="C1", alpha=0.3, label="95% interval")
        ax.axvline(mean, color="C1", label=f"mean {mean:.1f}%")
        ax.set_xlabel("episode accuracy (%)")
        ax.set_ylabel("episodes")
        ax.set_title(f"{self.n_way}-way {self.n_shot}-shot, {self.n_episodes} episodes")
        ax.legend(loc="upper left")
        return ax

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
        Episodes per vectorised batch. None picks one that covers about 8
        million feature values (support and query rows) on the CPU, where the
        rows are then gathered in cache-sized sub-batches, and 16 times more
        on other devices.

    n_jobs : int, default=None
        Threads evaluating batches in parallel on the CPU (and computing the
        CDNV). None means as many as torch's intra-op setting
        (``torch.get_num_threads()``, which these threads replace during the
        call), -1 all usable cores; never more than the usable cores, nor
        than the cores idle when the call starts (see
        :func:`sknc.utils.thread_budget` with ``idle=True``: on a busy
        machine a second worker adds hand-offs, not CPU time). Ignored on
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
    copied per episode. Threads follow sknc's thread policy
    (:mod:`sknc.utils`): torch and BLAS run on one thread for the duration
    of the call (and are restored): these many small operations run faster
    on one thread each, in parallel over batches (``n_jobs`` worker
    threads), and do not stall when other processes share the cores. The
    CDNV of CPU features is computed by the numpy path of
    :func:`sknc.metrics.cdnv`, on one of the ``n_jobs`` worker threads
    while the others evaluate episodes.

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
    cv, n_jobs = _check_options(cv, metric, normalize, batch_size, n_jobs)
    n_way, n_shot, n_query, n_episodes = cv._check_params()
    X = _check_features(X)
    y = cv._check_y(None, y)
    check_consistent_length(X, y)
    labels, members, starts, counts, eligible = cv._class_pool(y)
    feats = _Features.place(X, _pool_rows(labels, members, starts, counts, eligible), device)
    if feats.Xt.device.type != "cpu":
        n_jobs = 1
    if batch_size is None:
        batch_size = _default_batch_size(feats.Xt, n_way * (n_shot + n_query))
    batch_size = min(batch_size, n_episodes)

    tally = _Tally(n_episodes, feats, verbose)
    with tally:
        cdnv = (lambda threads: _cdnv(feats, y, threads)) if return_cdnv else None
        cdnv = _run_episodes(feats, y, cv, tally, batch_size, n_jobs, metric, normalize, cdnv)
    scores = tally.correct / float(n_way * n_query)
    _settle_near_ties(X, y, tally.unsure, scores, metric, normalize)

    std = float(np.std(scores))
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
        cdnv=cdnv,
        n_exact=len(tally.unsure),
    )


def _check_options(cv, metric, normalize, batch_size, n_jobs):
    """Validate the options of :func:`evaluate_episodes`; ``(cv, n_jobs)`` resolved."""
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
    return cv, thread_budget(n_jobs, idle=True)


def _pool_rows(labels, members, starts, counts, eligible):
    """Sorted rows of the classes episodes draw from; None when that is every class."""
    if eligible.size == labels.size:
        return None
    return np.sort(np.concatenate([members[starts[c] : starts[c] + counts[c]] for c in eligible]))


def _default_batch_size(Xt, rows_per_episode):
    """Episodes per batch: about ``_BATCH_ELEMENTS`` feature values (16x off the CPU)."""
    budget = _BATCH_ELEMENTS if Xt.device.type == "cpu" else 16 * _BATCH_ELEMENTS
    return max(1, budget // (rows_per_episode * Xt.shape[1]))


@dataclass(eq=False)
class _Features:
    """The features as the kernel sees them, and how its row indices map to ``X``.

    ``Xt`` is a torch view of ``X`` on the compute device, or, when ``X``
    had to be copied to another device and not every class is drawn from,
    the copied rows ``rows`` of ``X`` only; ``remap`` then maps indices into
    ``X`` to indices into ``Xt``.
    """

    X: object
    Xt: object
    rows: np.ndarray | None
    remap: np.ndarray | None = None

    @classmethod
    def place(cls, X, rows, device):
        import torch

        if is_torch_tensor(X):
            target = X.device if device is None else resolve_device(device)
            Xt = X
        else:
            target = torch.device("cpu") if device is None else resolve_device(device)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*not writable.*")
                Xt = torch.from_numpy(X)  # read only, never written
        if Xt.device == target:
            return cls(X, Xt, rows)
        if rows is None:
            return cls(X, Xt.to(target), rows)
        remap = np.full(X.shape[0], -1, dtype=np.int64)
        remap[rows] = np.arange(rows.size)
        return cls(X, Xt[torch.from_numpy(rows).to(Xt.device)].to(target), rows, remap)

    def pool_rows(self):
        """Rows of ``Xt`` the episodes can use; None for all."""
        return self.rows if self.remap is None else None

    def norms(self, pool=None, n_parts=1):
        """Float64 norms of the rows of ``Xt`` the episodes can use.

        In ``n_parts`` parts on the thread ``pool`` if given.
        """
        rows = self.pool_rows()
        if pool is None or n_parts == 1:
            return _row_norms(self.Xt, rows)
        import torch

        Xt, n = self.Xt, self.Xt.shape[0]
        out = torch.zeros(n, dtype=torch.float64, device=Xt.device)
        if rows is None:
            cuts = np.linspace(0, n, n_parts + 1).astype(int)
            parts = [(Xt[a:b], None, out[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
        else:
            parts = [(Xt, r, out) for r in np.array_split(rows, n_parts)]

        def work(part):
            with torch.inference_mode():  # thread-local, like out's
                _row_norms(*part)

        for fut in [pool.submit(work, part) for part in parts]:
            fut.result()
        return out

    def device_indices(self, idx):
        """Indices into ``X`` as an int64 tensor of indices into ``Xt``."""
        import torch

        if self.remap is not None:
            idx = self.remap[idx]
        return torch.from_numpy(idx.astype(np.int64, copy=False)).to(self.Xt.device)

    def host_indices(self, idx):
        """Indices into ``Xt`` (numpy) back to indices into ``X``."""
        return idx if self.remap is None else self.rows[idx]


class _Tally:
    """Correct queries per episode and the unsure episodes, with a progress bar."""

    def __init__(self, n_episodes, feats, verbose):
        from tqdm.auto import tqdm

        self.correct = np.zeros(n_episodes, dtype=np.int64)
        self.unsure = {}  # position -> (support, query) indices into X
        self.feats = feats
        self.bar = tqdm(total=n_episodes, disable=not verbose, desc="episodes", unit="ep")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()

    def add_batch(self, job, result):
        """Record a kernel batch: ``job = (first, support, query)`` as drawn."""
        first, support, query = job
        correct, unsure, late = result
        self.correct[first : first + correct.size] += correct
        for i in np.flatnonzero(unsure):
            self.unsure[first + i] = (support[i], query[i])
        self.bar.update(correct.size)
        self.add_late(late)

    def add_late(self, late):
        """Record the queries a kernel settled in float64 (see ``_EpisodeKernel.flush``)."""
        if late is None:
            return
        episode, ok, sure, support, query = late
        np.add.at(self.correct, episode[sure], ok[sure])
        host = self.feats.host_indices
        for i in np.flatnonzero(~sure):
            self.unsure[episode[i]] = (host(support[i]), host(query[i]))


def _run_episodes(feats, y, cv, tally, batch_size, n_jobs, metric, normalize, cdnv=None):
    """Evaluate every episode of ``cv`` in batches, on ``n_jobs`` threads, into ``tally``.

    Each worker thread owns a kernel (its buffers) while it runs a batch; the
    queries a kernel leaves to its float64 pass are flushed every
    ``_PENDING_QUERIES`` and at the end. Everything runs on one torch thread
    per worker (the operations are small; see :mod:`sknc.utils`). ``cdnv``,
    a function of the number of threads it may use, is run too, and its
    value returned: with several workers, in one of them (on one thread)
    while the others run batches, which balances the load better than
    running it on all threads afterwards.
    """
    import torch

    n_way, n_shot, n_query, _ = cv._check_params()

    def batches():
        first = 0
        for support, query in cv._iter_chunks(y):
            for b in range(0, support.shape[0], batch_size):
                yield first + b, support[b : b + batch_size], query[b : b + batch_size]
            first += support.shape[0]

    def run(job):
        first, support, query = job
        kernel = kernels.get()
        try:
            with torch.inference_mode():  # thread-local: set in every worker
                c, u = kernel(feats.device_indices(support), feats.device_indices(query), first)
                late = kernel.flush() if kernel.n_pending >= _PENDING_QUERIES else None
            return job, (c.cpu().numpy(), u.cpu().numpy(), late)
        finally:
            kernels.put(kernel)

    def flush(kernel):
        with torch.inference_mode():
            return kernel.flush()

    def make_kernels(norms):
        # float32 class sums (see _EpisodeKernel) unless a common offset
        # would make their rounding leave most queries undecided
        sums32 = (
            feats.Xt.dtype == torch.float32
            and normalize != "center+l2"
            and _offset_ratio(feats.Xt, feats.pool_rows()) <= _ncc_kernel._SUMS32_MAX_OFFSET
        )
        kernels = queue.SimpleQueue()
        for _ in range(n_jobs):
            kernels.put(
                _EpisodeKernel(
                    feats.Xt, norms, n_way, n_shot, n_query, batch_size, metric, normalize, sums32
                )
            )
        return kernels

    value = None
    with single_thread(), torch.inference_mode():
        if n_jobs == 1:
            kernels = make_kernels(feats.norms())
            for job in batches():
                tally.add_batch(*run(job))
            if cdnv is not None:
                value = cdnv(1)
        else:
            with ThreadPoolExecutor(n_jobs, initializer=_one_torch_thread) as pool:
                kernels = make_kernels(feats.norms(pool, n_jobs))
                side = None if cdnv is None else pool.submit(cdnv, 1)
                _unordered(pool, run, batches(), 2 * n_jobs, lambda out: tally.add_batch(*out))
                # the kernels' last float64 passes, in parallel
                _unordered(pool, flush, _drain(kernels), n_jobs, tally.add_late)
                value = None if side is None else side.result()
        for kernel in _drain(kernels):
            tally.add_late(kernel.flush())
    return value


def _drain(q):
    """Take every item out of a ``queue.SimpleQueue``."""
    items = []
    while not q.empty():
        items.append(q.get())
    return items


def _one_torch_thread():
    import torch

    torch.set_num_threads(1)


def _unordered(pool, func, items, in_flight, consume):
    """``consume(func(item))`` for every item, on ``pool``, in completion order.

    At most ``in_flight`` items are submitted ahead (memory stays bounded);
    other work already on the pool does not block the results. On an error
    the pending items are cancelled and the error raised.
    """
    pending = set()
    try:
        for item in items:
            pending.add(pool.submit(func, item))
            if len(pending) >= in_flight:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    consume(fut.result())
        for fut in as_completed(pending):
            consume(fut.result())
        pending = set()
    finally:
        for fut in pending:
            fut.cancel()


def _settle_near_ties(X, y, unsure, scores, metric, normalize):
    """Score the unsure episodes with the estimator itself, as cross_val_score would."""
    if not unsure:
        return
    est = NearestClassCenter(metric=metric, normalize=normalize)
    for pos, (s, q) in sorted(unsure.items()):
        s, q = s.ravel(), q.ravel()
        est.fit(_host_rows(X, s), y[s])
        scores[pos] = accuracy_score(y[q], est.predict(_host_rows(X, q)))


def _cdnv(feats, y, n_jobs):
    """CDNV of the rows of the classes the episodes draw from, in the thread policy.

    CPU features go through the numpy path of :func:`sknc.metrics.cdnv`
    (a view, no copy), which spreads its passes over ``n_jobs``
    single-threaded worker threads.
    """
    from ..metrics import cdnv

    if feats.remap is not None:  # Xt holds exactly those rows, on another device
        X, labels = feats.Xt, y[feats.rows]
    elif feats.rows is None:
        X, labels = feats.Xt, y
    else:
        X, labels = _take_rows(feats.Xt, feats.rows), y[feats.rows]
    if X.device.type == "cpu" and X.dtype in _numpy_dtypes():
        X = X.numpy()
    with thread_limits(n_jobs):
        return float(cdnv(X, labels))


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
