"""The Docker backend: one attempt in one container on one engine, through the Docker SDK (an
engine with the Docker API: Docker, or Podman's socket). Images by content-hash tag, the Azure
folder's private copy, and `clean` of what the tool left on the engine.

May import: backends.base, staging, records, jobs, core; the `docker` SDK.
"""
