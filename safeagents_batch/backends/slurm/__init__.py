"""The Slurm backend: each attempt is a Slurm job named after its run, run on its node's own
engine through the Docker backend; the batch dir on the cluster's shared filesystem is the
wire between the driver and the jobs (wire.py). Slurm's own commands submit, watch and cancel.

May import: backends.docker, backends.base, staging, records, jobs, core.
"""
