"""The one way this server compiles a loop with numba: ahead of the first request, cached.

A batch of 1000 IMEIs costs a few hundred nanoseconds of real work per step, but each
numpy operation costs 1 to 5 µs before it starts, and reading a request, normalising
its IMEIs, searching the fact table and writing the answer took dozens of them: about
1 ms a batch, more than the gRPC call itself. The request path's loops are therefore
compiled, each beside the idea it serves (the wire codec, normalisation, the fact
table's search, IMSI checks), with the decorator below.

Only the serving process imports those modules. `imeireg import` works in whole-array
numpy passes over millions of rows, where fixed costs vanish, and so does not pay
numba's start-up (about 0.9 s: the import and loading the compiled code). Every
function is compiled for the argument types it is declared with when its module is
first imported, and cached beside it, so no request ever waits for a compiler.
Compiled functions run without the GIL (`nogil`), so a state built on a thread does
not hold up the event loop while it searches or assembles arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

# Arguments are typed read-only, so that views of a request's bytes or of the store's
# pages are taken as they are; writable arrays convert to them.
BYTES, I64S, U32S, U64S, U16S = (
    f"Array({dtype}, 1, 'C', readonly=True)"
    for dtype in ("uint8", "int64", "uint32", "uint64", "uint16")
)
Function = TypeVar("Function", bound=Callable[..., Any])


def compiled(signature: str) -> Callable[[Function], Function]:
    """Compile for `signature` now (or load the cached build), in nopython mode."""
    # A dispatcher is called like the function it compiled.
    return cast(
        Callable[[Function], Function],
        numba.njit(signature, cache=True, nogil=True, error_model="numpy"),
    )
