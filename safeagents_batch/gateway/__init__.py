"""The batch's model gateway: where the containers' model calls go. It holds the real
credentials (read from the host at run time) and gives each attempt a random token of its own;
a call with a live token is forwarded to its upstream with the credential swapped in, streamed
back as it comes, counted (usage per model) and recorded (`model_calls.jsonl`, through the
attempt's sink). Backends start it where their containers run and say how a container reaches
it.

Imports records (usage), jobs (upstream definitions) and core; never an engine or a cluster.
"""
