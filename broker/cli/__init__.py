"""The `secondline` command: local set-up (init, serve) and everything else over the REST API."""
