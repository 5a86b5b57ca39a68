"""Tests of infra/: the deployment files (no servers) and the local stack that `peftflow serve` runs."""
