"""The `elastrain` command line."""
