"""Where containers run, behind one protocol (`base`: the backend, its request, outcome and
sink): `docker` on one engine, `ray` across a cluster's nodes. Importing this package loads no
backend: the Docker SDK comes in only with `backends.docker`, Ray with `backends.ray`.

May import: staging, records, jobs, core (and each backend its own client library).
"""
