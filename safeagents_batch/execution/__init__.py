"""Running a batch: one preparation path for `run` and `rerun` (select, env, code, images,
records), the worker pool with its limits and the engine-loss gate, the sink that owns an
attempt's dir, and the Reporter the library speaks through (the CLI renders it).

May import: backends.base (the protocol, never a backend), staging, records, jobs, core.
"""
