"""Deprecated aliases of renamed public functions.

deprecated_alias(func, old_name, new_name, *, since="0.2")
    A function that warns (``FutureWarning``, naming the caller's line) that
    ``old_name`` is now ``new_name`` and calls ``func``. sknc keeps an old
    spelling working for one release and removes it in the next (see
    CONTRIBUTING.md and CHANGELOG.md).
"""

import functools

from ._warnings import SkncFutureWarning, warn_external

__all__ = ["deprecated_alias", "warn_renamed"]


def _message(old_name, new_name, since):
    return (
        f"{old_name} was renamed {new_name} in sknc {since}; the old name will be "
        "removed in the next release."
    )


def warn_renamed(old_name, new_name, *, since="0.2"):
    """Issue the ``FutureWarning`` of a renamed function, method or attribute.

    For deprecated methods, which call it and then the new method.
    """
    warn_external(_message(old_name, new_name, since), SkncFutureWarning)


def deprecated_alias(func, old_name, new_name, *, since="0.2"):
    """Wrap ``func`` under its old public name, with a ``SkncFutureWarning`` (a
    ``FutureWarning``) on each call.

    Parameters
    ----------
    func : callable
        The function under its new name.
    old_name, new_name : str
        Dotted public names, e.g. ``"sknc.metrics.make_nc_scoring"``.
    since : str, default="0.2"
        The release that renamed it; the old name goes in the next one.

    Returns
    -------
    callable

    Examples
    --------
    >>> import warnings
    >>> from sknc.utils._deprecation import deprecated_alias
    >>> old = deprecated_alias(abs, "pkg.old_abs", "pkg.new_abs")
    >>> with warnings.catch_warnings(record=True) as record:
    ...     warnings.simplefilter("always")
    ...     old(-2)
    2
    >>> print(record[0].message)
    pkg.old_abs was renamed pkg.new_abs in sknc 0.2; the old name will be removed in the next release.
    """
    message = _message(old_name, new_name, since)

    @functools.wraps(func)
    def alias(*args, **kwargs):
        warn_external(message, SkncFutureWarning)
        return func(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old_name.rsplit(".", 1)[-1]
    alias.__doc__ = f"Deprecated alias of :func:`{new_name}` (since sknc {since}).\n\n{message}\n"
    alias.__wrapped__ = func
    return alias
