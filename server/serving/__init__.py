"""Serving: the state every answer comes from, how it is kept current, and the process.

`build` makes an immutable `ServingState` from one snapshot of the store (or brings the
previous one up to date); `watcher` notices a new generation or snapshot target, builds
the next state on a thread, off the event loop, and swaps one reference; `lag` measures
how late the event loop runs; `process` runs the workers, their fronts and health.
"""
