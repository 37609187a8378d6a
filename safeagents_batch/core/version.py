"""The tool's version, as records, image labels and `--version` show it."""

from __future__ import annotations

VERSION = "0.1.0"
