"""Developer tools: code that builds shipped assets, outside the runtime packages."""
