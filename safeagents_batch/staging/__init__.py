"""What leaves the host for a container: the one file selector (ignores, caps) for code
snapshots and image contexts, code snapshots by digest, image specs (Dockerfile text, context
digest, tag) and what an image resolved of the packages asked for.

May import: jobs, core.
"""
