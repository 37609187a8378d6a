"""The Ray backend: one agent actor per node and batch runs each attempt there on the node's
own engine through the Docker backend; this package, code and images reach the nodes through
Ray. Errors raised on a node come back with their cause.

May import: backends.docker, backends.base, staging, records, jobs, core; `ray`.
"""
