"""Datasets shipped with the pipeline (their generators live in tools/, outside the runtime package)."""
