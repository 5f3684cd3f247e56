"""A feature cache that cannot execute code: ``.npy`` files, written atomically.

Contents
--------
FeatureCache(location)
    ``load(key, shape)`` / ``save(key, array)`` of float32 feature matrices
    under ``location/sknc-features/``. Entries are ``.npy`` files read with
    ``allow_pickle=False`` and checked (format, dtype, shape) before use;
    anything else is a miss. Files are written to a temporary name and moved
    into place with ``os.replace``, so that processes sharing the folder
    (Dask workers, ``n_jobs``) never see half a file.
resolve_cache(memory)
    ``memory=`` of :class:`~sknc.features.BackboneFeatures` -> a
    :class:`FeatureCache` or None (no caching), with a warning when the
    location cannot be used.
module_fingerprint(module)
    A hash of what a module computes beyond its state dict: every
    sub-module's Python attributes, its non-persistent buffers, its forward
    hooks and the code of classes defined outside torch and timm.
key_digest(key)
    The file name of a key (a JSON-able dict).
"""

import enum
import functools
import hashlib
import json
import os
import pickle
import tempfile
import types
import warnings

import numpy as np

from ..utils._warnings import CacheWarning, warn_external

__all__ = ["FeatureCache", "UnkeyableError", "key_digest", "module_fingerprint", "resolve_cache"]

_SUBDIR = "sknc-features"


def key_digest(key):
    """Hex digest of a JSON-able key (sorted keys, so the order of entries is irrelevant)."""
    text = json.dumps(key, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


class FeatureCache:
    """Feature matrices as ``.npy`` files under ``location/sknc-features``.

    Parameters
    ----------
    location : str or path-like
        The cache folder (created when needed).
    """

    def __init__(self, location):
        self.location = os.path.abspath(os.path.expanduser(os.fspath(location)))
        self.folder = os.path.join(self.location, _SUBDIR)

    def path(self, digest):
        """The file of an entry."""
        return os.path.join(self.folder, digest[:2], digest + ".npy")

    def prepare(self):
        """Create the folder; returns the reason it cannot be used, or None."""
        if os.path.exists(self.location) and not os.path.isdir(self.location):
            return f"{self.location!r} is not a directory"
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as exc:
            return f"{self.location!r} cannot be created ({exc.strerror or exc})"
        return None

    def load(self, digest, shape):
        """The cached float32 array of ``shape``, or None (a miss).

        Anything but a plain ``.npy`` float32 array of that shape (a pickle, an
        object array, another shape or dtype, a truncated file) is a miss;
        nothing read here can run code.
        """
        path = self.path(digest)
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )(f)
                if header[0] != tuple(shape) or header[2] != np.dtype(np.float32):
                    raise ValueError(f"entry holds {header[2]} {header[0]}, expected {shape}")
                f.seek(0)
                arr = np.lib.format.read_array(f, allow_pickle=False)
        except FileNotFoundError:
            return None
        except Exception as exc:  # anything unexpected in a shared folder is a miss
            warn_external(
                f"Ignored an invalid feature-cache entry {path!r} ({type(exc).__name__}: "
                f"{exc}); the features are computed again and the entry replaced.",
                CacheWarning,
            )
            return None
        if arr.dtype != np.float32 or arr.shape != tuple(shape):  # pragma: no cover
            return None
        return arr

    def save(self, digest, array):
        """Store ``array`` atomically; warns (and returns False) when it cannot."""
        path = self.path(digest)
        tmp = None
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=os.path.dirname(path))
            with os.fdopen(fd, "wb") as f:
                np.lib.format.write_array(
                    f, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False
                )
            os.replace(tmp, path)
            tmp = None
            return True
        except OSError as exc:
            warn_external(
                f"Could not write to the feature cache {self.location!r} "
                f"({exc.strerror or exc}); the features are returned but not cached.",
                CacheWarning,
            )
            return False
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


def resolve_cache(memory):
    """``memory`` -> :class:`FeatureCache` or None.

    None, and a ``joblib.Memory`` without location, mean no caching. A str,
    path-like or ``joblib.Memory`` gives its folder. A location that is not
    a directory or cannot be created warns and disables the cache (the
    features are computed, never lost for a cache problem).
    """
    if memory is None:
        return None
    if isinstance(memory, (str, os.PathLike)):
        location = memory
    elif hasattr(memory, "location"):  # joblib.Memory
        location = memory.location
        if location is None:
            return None
    else:
        raise ValueError(
            "memory must be None, a folder path or a joblib.Memory with a location; "
            f"got {type(memory).__name__}."
        )
    cache = FeatureCache(location)
    reason = cache.prepare()
    if reason is not None:
        warn_external(
            f"The feature cache memory={os.fspath(location)!r} cannot be used: {reason}. "
            "Features are computed without caching.",
            CacheWarning,
        )
        return None
    return cache


# --------------------------------------------------------------------------
# what a module computes, beyond its state dict
# --------------------------------------------------------------------------
class UnkeyableError(ValueError):
    """A module attribute whose value cannot be hashed deterministically."""


_MODULE_SKIP = {
    "_parameters",
    "_buffers",
    "_modules",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_is_full_backward_hook",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
    "_compiled_call_impl",
}
_LIBRARY_PREFIXES = ("torch", "timm", "torchvision", "builtins", "numpy", "functools")
_MAX_DEPTH = 40


class _Encoder:
    """Feeds a deterministic encoding of Python values into a hash."""

    def __init__(self, h):
        self.h = h
        self.memo = {}

    def put(self, *parts):
        for part in parts:
            self.h.update(part if isinstance(part, bytes) else str(part).encode())
            self.h.update(b"\x00")

    def code(self, co, where, depth):
        self.put("code", co.co_name, co.co_code, repr(co.co_names), repr(co.co_varnames))
        for const in co.co_consts:
            if isinstance(const, types.CodeType):
                self.code(const, where, depth + 1)
            else:
                self.value(const, where, depth + 1)

    def function(self, fn, where, depth):
        module = getattr(fn, "__module__", None) or ""
        self.put("fn", module, getattr(fn, "__qualname__", ""))
        if module.split(".")[0] in _LIBRARY_PREFIXES:
            return
        self.code(fn.__code__, where, depth)
        self.value(fn.__defaults__, where, depth + 1)
        self.value(fn.__kwdefaults__, where, depth + 1)
        for cell in fn.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                contents = None
            self.value(contents, where, depth + 1)

    def user_class(self, cls, depth):
        """The code of the methods of ``cls`` and its bases outside the libraries."""
        for klass in cls.__mro__:
            module = getattr(klass, "__module__", "") or ""
            if module.split(".")[0] in _LIBRARY_PREFIXES:
                continue
            self.put("class", module, klass.__qualname__)
            for name in sorted(vars(klass)):
                attr = vars(klass)[name]
                if isinstance(attr, (staticmethod, classmethod)):
                    attr = attr.__func__
                if isinstance(attr, property):
                    attr = attr.fget
                if isinstance(attr, types.FunctionType):
                    self.put(name)
                    self.function(attr, f"{klass.__qualname__}.{name}", depth + 1)

    def value(self, obj, where, depth=0):
        import torch

        if depth > _MAX_DEPTH:
            raise UnkeyableError(f"{where} is nested too deeply to be keyed")
        if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
            self.put(type(obj).__name__, repr(obj))
            return
        if id(obj) in self.memo:
            self.put("ref", self.memo[id(obj)][0])
            return
        self.memo[id(obj)] = (len(self.memo), obj)  # keeps obj alive: ids are not reused
        if isinstance(obj, torch.Tensor):
            t = obj.detach().to("cpu").contiguous()
            self.put("tensor", t.dtype, tuple(t.shape))
            if t.numel():
                self.put(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                self.put("objarray", obj.shape)
                for item in obj.reshape(-1):
                    self.value(item, where, depth + 1)
            else:
                self.put("array", obj.dtype.str, obj.shape, np.ascontiguousarray(obj).tobytes())
        elif isinstance(obj, (np.generic, torch.dtype, torch.device, torch.Size)):
            self.put(type(obj).__name__, repr(obj))
        elif isinstance(obj, enum.Enum):
            self.put("enum", type(obj).__qualname__, obj.name)
        elif isinstance(obj, (tuple, list)):
            self.put(type(obj).__name__, len(obj))
            for item in obj:
                self.value(item, where, depth + 1)
        elif isinstance(obj, dict):
            self.put(type(obj).__name__, len(obj))
            for k in sorted(obj, key=repr):
                self.value(k, where, depth + 1)
                self.value(obj[k], f"{where}[{k!r}]", depth + 1)
        elif isinstance(obj, (set, frozenset)):
            self.put(type(obj).__name__, len(obj))
            for item in sorted(obj, key=repr):
                self.value(item, where, depth + 1)
        elif isinstance(obj, functools.partial):
            self.put("partial")
            self.value(obj.func, where, depth + 1)
            self.value(obj.args, where, depth + 1)
            self.value(obj.keywords, where, depth + 1)
        elif isinstance(obj, types.FunctionType):
            self.function(obj, where, depth)
        elif isinstance(obj, types.MethodType):
            self.put("method", obj.__func__.__qualname__)
            self.value(obj.__self__, where, depth + 1)
            self.function(obj.__func__, where, depth)
        elif isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType)):
            self.put("builtin", getattr(obj, "__module__", ""), obj.__qualname__)
        elif isinstance(obj, type):
            self.put("type", obj.__module__, obj.__qualname__)
            self.user_class(obj, depth)
        elif isinstance(obj, torch.nn.Module):
            self.module(obj, where, depth)
        elif hasattr(obj, "__dict__") and not isinstance(obj, types.ModuleType):
            self.put("object", type(obj).__module__, type(obj).__qualname__)
            self.user_class(type(obj), depth)
            self.value(dict(vars(obj)), where, depth + 1)
            for slot in getattr(type(obj), "__slots__", ()):
                self.value(getattr(obj, slot, None), f"{where}.{slot}", depth + 1)
        elif isinstance(obj, types.ModuleType):
            self.put("pymodule", obj.__name__)
        else:
            try:  # simple C objects (compiled patterns, ...) by their pickled form
                data = pickle.dumps(obj, protocol=4)
            except Exception as exc:
                raise UnkeyableError(
                    f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}, whose "
                    "value cannot be hashed"
                ) from exc
            self.put("pickled", type(obj).__qualname__, data)

    def module(self, mod, where, depth):
        self.put("module", type(mod).__module__, type(mod).__qualname__)
        self.user_class(type(mod), depth)
        state = vars(mod)
        for name in sorted(state):
            if name in _MODULE_SKIP:
                continue
            value = state[name]
            if name.startswith("_forward") and isinstance(value, dict):
                value = list(value.values())  # hook ids differ between processes
            self.put(name)
            self.value(value, f"{where}.{name}" if where else name, depth + 1)
        non_persistent = sorted(getattr(mod, "_non_persistent_buffers_set", ()))
        for name in non_persistent:  # not in the state dict, but used by forward
            self.put("buffer", name)
            self.value(mod._buffers.get(name), f"{where}.{name}", depth + 1)
        for name, child in mod._modules.items():
            self.put("child", name)
            if child is None:
                self.put("None")
            else:
                self.value(child, f"{where}.{name}" if where else name, depth + 1)


def module_fingerprint(module):
    """Hex digest of what ``module`` computes beyond its state dict.

    Covers, for every sub-module: its class, its Python attributes (numbers,
    strings, containers, plain tensors and arrays, functions with their code,
    defaults and closures, ``functools.partial`` objects, enums, classes and
    other objects through their attributes), its non-persistent buffers
    (which ``state_dict`` leaves out), its forward hooks and pre-hooks, and
    the code of its class and base classes when they are defined outside
    torch, timm and torchvision (the libraries' code is covered by their
    versions, which callers add to the key).

    Raises
    ------
    UnkeyableError
        Naming the first attribute whose value cannot be hashed
        deterministically (a lock, a file handle, a generator, ...).
    """
    import torch

    h = hashlib.blake2b(digest_size=20)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _Encoder(h).value(module, "")
    return h.hexdigest()
