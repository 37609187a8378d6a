"""The command line: one module per command, the error boundary that turns every BatchError
into one line and an exit code, the rendering of reporter notes and progress, and the one
place (with `runner`) that constructs a backend.

May import: everything. Nothing imports it.
"""
