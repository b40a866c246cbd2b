"""What a request costs and how it is counted: usage, prices, the event record, rollups, histograms.

Pure: no I/O and no web framework (import-linter contract in pyproject.toml).
"""
