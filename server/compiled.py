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

A compiled function takes in the code of the compiled functions it calls and the values
of the constants it reads, wherever they are defined, but numba's cache checks only the
source of the function's own module (a documented limitation). Here a cached build is
also stamped with every source file of the package, so that changing any of them
compiles afresh (about 6 s for the request path, once) instead of serving a stale build:
the fact table's BLOCK, say, read by its search from another module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, cast

import numba
from numba.core.caching import CompileResultCacheImpl, FunctionCache

import imeireg

# Arguments are typed read-only, so that views of a request's bytes or of the store's
# pages are taken as they are; writable arrays convert to them.
BYTES, I64S, U32S, U64S, U16S = (
    f"Array({dtype}, 1, 'C', readonly=True)"
    for dtype in ("uint8", "int64", "uint32", "uint64", "uint16")
)
Function = TypeVar("Function", bound=Callable[..., Any])


def compiled(signature: str) -> Callable[[Function], Function]:
    """Compile for `signature` now (or load the cached build), in nopython mode."""

    def compile_now(function: Function) -> Function:
        dispatcher: Any = numba.njit(nogil=True, error_model="numpy")(function)
        # What `njit(signature, cache=True)` does, with the package-stamped cache.
        dispatcher._cache = _PackageStampedCache(function)  # type: ignore[no-untyped-call]
        dispatcher.compile(signature)
        dispatcher.disable_compile()
        # A dispatcher is called like the function it compiled.
        return cast(Function, dispatcher)

    return compile_now


@cache
def _package_sources() -> str:
    """A digest of every source file of the package (about 3 ms)."""
    digest = hashlib.sha256()
    root = Path(imeireg.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class _PackageStamped:
    """A numba cache locator whose source stamp also covers the package's sources."""

    def get_source_stamp(self) -> object:
        return super().get_source_stamp(), _package_sources()  # type: ignore[misc]


def _stamped(locators: list[type[object]]) -> list[type[object]]:
    return [type(locator.__name__, (_PackageStamped, locator), {}) for locator in locators]


class _PackageStampedCacheImpl(CompileResultCacheImpl):
    # numba's own locators (beside the module, in NUMBA_CACHE_DIR, per user, ...), in
    # numba's order, each stamped with the package's sources.
    _locator_classes = _stamped(CompileResultCacheImpl._locator_classes)


class _PackageStampedCache(FunctionCache):
    _impl_class = _PackageStampedCacheImpl
