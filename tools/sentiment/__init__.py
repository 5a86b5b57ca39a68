"""The generator of the quickstart's sentiment reviews (`python -m tools.sentiment.generate`)."""
