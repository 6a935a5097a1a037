"""What imeireg's store spends, database by database, read from LMDB's own page counts.

Read with lmdb directly rather than through the store's classes, so that the
figures follow whatever named databases the store's current layout has.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import lmdb

if TYPE_CHECKING:
    from lmdb import _StatDict

_MAX_DBS = 64
MAIN = "(main)"


def database_bytes(db: Path) -> dict[str, int]:
    """Bytes of the LMDB pages (branch, leaf, overflow) of each named database and the main one."""
    env = lmdb.open(str(db), readonly=True, lock=False, max_dbs=_MAX_DBS)
    try:
        sizes = {MAIN: _pages(env.stat())}
        with env.begin() as txn:
            names = [bytes(key) for key in txn.cursor().iternext(values=False)]
            for name in names:
                handle = env.open_db(name, txn=txn, create=False)
                sizes[name.decode(errors="replace")] = _pages(txn.stat(handle))
    finally:
        env.close()
    return sizes


def _pages(stat: _StatDict) -> int:
    return int((stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]) * stat["psize"])
