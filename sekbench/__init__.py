"""sekbench: the workbench app and the command line."""
