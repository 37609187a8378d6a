"""The ground floor: what every stage shares and nothing of the product's own. One error
hierarchy (each class an exit code), the clock, sizes, safe names, the labels on what the tool
makes, the version, and reading untrusted tar streams as data.

May import: nothing of the package.
"""
