"""One module per CLI verb; see sekbench/cli.py for the contract."""
