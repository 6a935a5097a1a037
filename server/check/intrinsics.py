"""What the check's compiled passes need of the processor and numba does not offer: for
the fact table's search (`fact_table_search`), a block of sorted keys compared with a
query in one vector instruction and a block fetched into the cache ahead of its use;
for normalisation (`normalise_compiled`), eight bytes of a string read as one word.

Written as a loop, the count of a block's keys at or below a query compiles to sixteen
scalar compares (numba hands LLVM no loop of a constant length to vectorise), or at
best, over a slice, to a vector loop that measured 2.3 times slower than this: 42
against 18 µs for the 6 levels of 1000 lookups at 10^7 IMEIs. Here LLVM is handed the
compare itself, a <BLOCK x u64> `icmp ule` and a population count, which it lowers to
the vectors the processor has (two AVX-512 compares here, four AVX2 ones elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from llvmlite import ir  # type: ignore[import-untyped]
from numba import types
from numba.extending import intrinsic

from imeireg.server.check.fact_table import BLOCK

_WORD = ir.IntType(64)
_LANES = ir.VectorType(_WORD, BLOCK)
_INT = ir.IntType(32)
_BYTE_POINTER = ir.IntType(8).as_pointer()
# llvm.prefetch(address, read, locality: keep in every cache level, data cache)
_PREFETCH = ir.FunctionType(ir.VoidType(), [_BYTE_POINTER, _INT, _INT, _INT])
_READ, _KEEP, _DATA = _INT(0), _INT(3), _INT(1)


def _keys_at_most(_: Any, keys: Any, at: Any, query: Any) -> tuple[Any, Callable[..., Any]]:
    signature = types.intp(keys, types.intp, types.uint64)

    def generate(context: Any, builder: Any, _signature: Any, args: Any) -> Any:
        array, start, bound = args
        data = context.make_array(keys)(context, builder, array).data
        block_at = builder.bitcast(builder.gep(data, [start]), _LANES.as_pointer())
        block = builder.load(block_at, align=8)
        bound_lane = builder.insert_element(
            ir.Constant(_LANES, ir.Undefined), bound, ir.Constant(_INT, 0)
        )
        bounds = builder.shuffle_vector(
            bound_lane,
            ir.Constant(_LANES, ir.Undefined),
            ir.Constant(ir.VectorType(_INT, BLOCK), [0] * BLOCK),
        )
        at_most = builder.bitcast(builder.icmp_unsigned("<=", block, bounds), ir.IntType(BLOCK))
        popcount = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(BLOCK)])
        return builder.zext(builder.call(popcount, [at_most]), _WORD)

    return signature, generate


def _prefetch(_: Any, array: Any, at: Any) -> tuple[Any, Callable[..., Any]]:
    signature = types.void(array, types.intp)

    def generate(context: Any, builder: Any, _signature: Any, args: Any) -> Any:
        values, start = args
        data = context.make_array(array)(context, builder, values).data
        address = builder.bitcast(builder.gep(data, [start]), _BYTE_POINTER)
        prefetch = builder.module.declare_intrinsic("llvm.prefetch", [_BYTE_POINTER], _PREFETCH)
        builder.call(prefetch, [address, _READ, _KEEP, _DATA])
        return context.get_dummy_value()

    return signature, generate


def _word_at(_: Any, chars: Any, at: Any) -> tuple[Any, Callable[..., Any]]:
    signature = types.uint64(chars, types.intp)

    def generate(context: Any, builder: Any, _signature: Any, args: Any) -> Any:
        array, start = args
        data = context.make_array(chars)(context, builder, array).data
        word_at = builder.bitcast(builder.gep(data, [start]), _WORD.as_pointer())
        return builder.load(word_at, align=1)

    return signature, generate


#: How many of ``keys[at:at + BLOCK]`` are at or below a query (unsigned), for compiled
#: functions. Unchecked: the caller keeps the whole block within `keys`.
keys_at_most = cast(
    Callable[[npt.NDArray[np.uint64], int, np.uint64], int], intrinsic(_keys_at_most)
)
#: Start fetching the cache line of ``array[at]``, for compiled functions; a hint, which
#: never faults.
prefetch = cast(Callable[[npt.NDArray[Any], int], None], intrinsic(_prefetch))
#: ``chars[at:at + 8]`` as one little-endian word (``chars[at]`` its lowest byte), for
#: compiled functions. Unchecked: the caller keeps the eight bytes within `chars`.
word_at = cast(Callable[[npt.NDArray[np.uint8], int], np.uint64], intrinsic(_word_at))
