"""The imeireg server, by role: a request's path reads from the folder names.

- `fronts/`   the protocols callers speak (today gRPC): decode a request, call the check
              path on the current serving state, encode the answer. No I/O, no rebuild.
- `check/`    the check path, pure functions over columns: normalise IMEIs → search the
              fact table → apply the policy.
- `serving/`  the serving state (everything one answer needs, immutable), the watcher that
              builds the next one off the event loop and swaps it in, and the process.
- `store/`    the LMDB registry: lists as roaring bitmaps per TAC, derived segments and the
              saved fact table, the import log, before-images for rollback, snapshots.
- `imports/`  list files → validated columns → full imports, deltas and rollbacks.
- `model.py`  the domain types every room speaks of (lists, snapshots, import records).
- `cli.py`    the `imeireg` commands that run on the registry's own machine (serve,
              import, history, rollback, demo; `cli_snapshot.py`: snapshot).
"""
