"""The batch dir and what is written in it: the typed records (runs, attempts, images,
provenance), the journal of every transition, the manifest snapshot and its store, the batch
lock, and the batch dir's layout (the one module that names its files).

May import: jobs, core.
"""
