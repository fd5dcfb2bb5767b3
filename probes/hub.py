"""Whether the Hugging Face hub can be reached, asked once per process.

An offline machine, or one whose network cannot reach the hub, then fails in one line at once instead of
waiting through the hub libraries' retries: callers load only from the local cache when it is unreachable.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

OFFLINE_VALUES = {"1", "ON", "YES", "TRUE"}
CONNECT_SECONDS = 3.0


def offline_requested() -> bool:
    """HF_HUB_OFFLINE set now (the hub libraries read it once, when they are imported)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in OFFLINE_VALUES


@functools.cache
def hub_reachable() -> bool:
    """False when offline is requested or the hub's host does not accept a connection within a few seconds."""
    from huggingface_hub import constants

    if offline_requested():
        return False
    address = urlparse(constants.ENDPOINT)
    host = address.hostname or "huggingface.co"
    port = address.port or (80 if address.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()
    except OSError:
        return False
    return True


@contextmanager
def cache_only_unless_reachable() -> Iterator[None]:
    """Within the context the hub libraries read only their local caches, unless the hub is reachable."""
    if hub_reachable():
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved
