"""gin configuration files (a package so `include 'polyret/gin_configs/...'` resolves anywhere)."""
