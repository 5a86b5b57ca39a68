"""The local stack: `peftflow serve / stop / status` and the process serving the deployments."""
