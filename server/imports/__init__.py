"""Imports: registry list files (DIRBS formats) into the store, whole or never.

`sources` reads a file (.csv, .csv.gz, .zip); `full` validates a whole list and replaces
it; `delta` adds, removes and updates entries in place; `demo` builds the demo registry
with the ordinary importers. A rejected file changes nothing and says which lines.
"""
