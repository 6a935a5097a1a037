"""Imports: registry list files (DIRBS formats) into the store, whole or never.

`sources` reads a file (.csv, .csv.gz, .zip) as rows or column blocks; `rows` says
what a row does and what is wrong with it, and `imei_columns` reads IMEIs as a check
does. `lists` holds each list's one spec (columns, rules, key, what full and delta
imports do to it), from `imei_lists`, `tac_lists` and `pairing_list`. `full`
replaces a list with a file, `delta` adds, removes and updates entries in place,
`rollback` returns the registry to an earlier state, and `demo` builds the demo
registry with the ordinary importers. A rejected file changes nothing and says
which lines.
"""
