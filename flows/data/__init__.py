"""Datasets shipped with the pipeline and the code that generates them."""
