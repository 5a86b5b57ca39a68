"""Test-only helpers that stand in for external services (e.g. a local Hugging Face Hub)."""
