"""The check path: IMEI strings → normalised keys → facts from the fact table → a policy's
statuses. Columns in, columns out; no I/O and no state of its own, so every front (gRPC
today, HTTP/2 and Diameter next) answers through the same functions.

`verdict.check(state, imeis, imsis)` is the entry point; `verdict_compiled` does its last
step (roamers, the policy's status, which rows need a pairing lookup) in one pass. Rules
live once: IMEI syntax in `imeireg.imei` (the reference), its vectorised form in
`normalise`, its compiled form in `normalise_compiled`; the fact table's layout in
`fact_table`, its search in `fact_table_search` (with `intrinsics`, the vector compare),
a delta's edits in `fact_table_edits` (held to `FactTable.apply_edits`).
"""
