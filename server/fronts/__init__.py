"""Fronts: the protocols callers speak, each a thin codec around `check.verdict.check`."""
