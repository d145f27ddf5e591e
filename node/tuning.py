"""Process-wide tuning for a node: the allocator, and how much a socket read takes.

`tune_process()` applies every setting here, once per process, and `serve()`
(node/app.py) calls it first: importing a Flotilla module changes nothing
about the process, and every way of starting a node (`flotilla serve`, the
tests, the benchmarks) runs with the same settings.

The allocator. A node moves blob bytes in chunk-sized buffers (8 MiB by
default): a chunk read from disk, a chunk arriving from a peer, a piece of
an upload. glibc serves such sizes with a fresh `mmap` and returns them with
`munmap`, or, once its adaptive threshold has risen, grows and trims the heap
top around them. Either way every buffer comes back as untouched pages, and
touching 2,048 new pages per 8 MiB costs more than copying or hashing the
bytes (measured here: about 7 ms to fill a fresh 8 MiB buffer, 0.4 ms to fill
a reused one). Keeping big blocks on the heap and keeping some free heap
mapped lets the next buffer reuse pages that are already there.

One arena for all threads: buffers are filled in worker threads (disk reads)
and released on the event loop, and with an arena per thread each one keeps
its own free heap; the GIL serializes most allocation anyway. The price is
memory kept after a burst: at most the trim threshold of free heap above what
is live. Measured here: a node's peak during three concurrent 384 MiB pulls
is about 217 MiB with these settings and 331 MiB without (264 MiB during a
push with the settings but an arena per thread); a node relaying chunks
from its peers spends 1.13 instead of 1.27 CPU seconds per GiB.

Socket reads. Hypercorn reads a client's socket and httpcore a peer's
response 64 KiB at a time; blob bodies and chunks are megabytes, so both read
1 MiB at a time instead, which cuts the per-read work (h11 events, ASGI
messages, body buffering) sixteen-fold for uploads, pulls through a peer and
chunk transfers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

from httpcore._async.http11 import AsyncHTTP11Connection
from hypercorn.trio import tcp_server as hypercorn_tcp

from node.config import MiB

log = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

# Blocks up to 32 MiB (glibc's largest allowed threshold) come from the heap;
# up to 64 MiB of free heap stays mapped before it is given back; one arena.
MMAP_THRESHOLD = 32 * MiB
TRIM_THRESHOLD = 64 * MiB
TOP_PAD = 16 * MiB
ARENA_MAX = 1

# Bytes one read of a socket may take: Hypercorn's and httpcore's default is 64 KiB.
SOCKET_READ = 1 * MiB

_tuned = False


def tune_process() -> None:
    """Apply every setting of this module; later calls in the same process do nothing."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    keep_big_buffers_mapped()
    read_sockets_in_big_pieces()


def read_sockets_in_big_pieces() -> None:
    """Hypercorn (client requests) and httpcore (peer responses) read `SOCKET_READ` at once."""
    hypercorn_tcp.MAX_RECV = SOCKET_READ
    AsyncHTTP11Connection.READ_NUM_BYTES = SOCKET_READ


def keep_big_buffers_mapped() -> bool:
    """Apply the allocator settings above; False where libc is not glibc or refused one of them."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (_M_TOP_PAD, TOP_PAD),
            (_M_ARENA_MAX, ARENA_MAX),
        )
    )
    if not applied:
        log.warning("the allocator refused the buffer settings; big buffers stay on mmap")
    return applied
