"""Access to the Hugging Face hub: a fast connectivity probe and an offline guard.

Shared by the image backbones (:func:`sknc.features.create_backbone` with
``pretrained=True``) and the text encoders (:class:`sknc.features.TextFeatures`).

hub_reachable(timeout=None)
    Whether a TCP connection to the hub (or the HTTPS proxy) opens quickly;
    cached for 60 seconds, ``SKNC_HUB_TIMEOUT`` sets the timeout.
offline_env()
    Whether ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` asks for offline mode.
hub_guard(name)
    Context manager: put ``huggingface_hub`` in offline mode for the call when
    the hub is out of reach (so that cached weights load and missing ones fail
    at once), and turn a failed download into an error that says what to do.
"""

import os
import socket
import threading
import time
from contextlib import contextmanager

__all__ = ["hub_address", "hub_guard", "hub_reachable", "offline_env"]

_PROBE_CACHE = {}


def hub_address():
    """(host, port) to probe for hub access: the HTTPS proxy if set, else the endpoint."""
    from urllib.parse import urlparse

    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if os.environ.get(var):
            parsed = urlparse(os.environ[var])
            if parsed.hostname:
                return parsed.hostname, parsed.port or 80
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    return parsed.hostname or "huggingface.co", parsed.port or (
        443 if parsed.scheme != "http" else 80
    )


def hub_reachable(timeout=None):
    """Whether a TCP connection to the Hugging Face hub (or proxy) opens in ``timeout`` s.

    DNS resolution has no timeout of its own, so the probe runs in a daemon
    thread. Results are cached for 60 seconds. ``SKNC_HUB_TIMEOUT`` sets the
    timeout (default 5 seconds).
    """
    if timeout is None:
        timeout = float(os.environ.get("SKNC_HUB_TIMEOUT", "5"))
    address = hub_address()
    cached = _PROBE_CACHE.get(address)
    if cached is not None and time.monotonic() - cached[1] < 60:
        return cached[0]
    result = []

    def probe():
        try:
            with socket.create_connection(address, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    ok = bool(result and result[0])
    _PROBE_CACHE[address] = (ok, time.monotonic())
    return ok


def offline_env():
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


@contextmanager
def offline_unless_reachable():
    """Put ``huggingface_hub`` in offline mode while the hub cannot be used.

    With ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set, or when a short
    connectivity probe fails, ``huggingface_hub`` is switched to offline mode
    for the duration of the block, so that cached files still load and missing
    ones raise at once instead of retrying for about a minute; the previous
    setting is restored afterwards. Yields why the hub is off (a phrase), or
    None when it is usable.
    """
    try:
        import huggingface_hub.constants as hf_constants
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        hf_constants = None
    reason = None
    if offline_env() or bool(getattr(hf_constants, "HF_HUB_OFFLINE", False)):
        reason = "HF_HUB_OFFLINE is set"
    elif not hub_reachable():
        reason = "the Hugging Face hub at {}:{} is not reachable".format(*hub_address())
    patched = reason is not None and hf_constants is not None
    if patched:
        # huggingface_hub reads HF_HUB_OFFLINE once, at import: set it for this call
        # (also when the variable was set after the import) so that nothing retries.
        old = hf_constants.HF_HUB_OFFLINE
        hf_constants.HF_HUB_OFFLINE = True
    try:
        yield reason
    finally:
        if patched:
            hf_constants.HF_HUB_OFFLINE = old


@contextmanager
def hub_guard(name):
    """Fail fast with a helpful error when pretrained weights cannot be fetched.

    The hub is put in offline mode while it cannot be used
    (:func:`offline_unless_reachable`); a download that fails raises a
    ``RuntimeError`` saying how to get the weights onto this machine.
    """
    with offline_unless_reachable() as reason:
        try:
            yield
        except OSError as exc:  # LocalEntryNotFoundError, URLError, ConnectionError, ...
            from huggingface_hub.constants import HF_HUB_CACHE

            why = reason or "the download failed"
            raise RuntimeError(
                f"Could not load pretrained weights for timm model {name!r}: {why}, and "
                f"the weights are not in the local cache ({HF_HUB_CACHE}). Either fetch them "
                "once on a machine with internet access "
                f'(python -c "import timm; timm.create_model({name!r}, pretrained=True)") '
                "and copy the cache to this machine (HF_HOME), or save the weights to a "
                "file and load it with pretrained=False, "
                "weights='path/to/weights.safetensors' (or .pth). "
                f"Original error: {type(exc).__name__}: {exc}"
            ) from exc
