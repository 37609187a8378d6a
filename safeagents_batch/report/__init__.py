"""The report of a batch dir: manifest in, files out. The results table (results.csv,
results.jsonl), the matrix view, the comparison with another batch, and the one-file HTML
page with its templates. Reads the batch dir only, never the jobs file again.

May import: records, core.
"""
