"""The jobs-file language: YAML read with every position kept, the JSON Schema, one rule per
key (jobs and frameworks), the typed model a file turns into, expansion into runs with their
ids, the framework table, secret names, env files, and the file as resolved for `rerun`.
Pure but for reading the jobs file and the files it names.

May import: core.
"""
