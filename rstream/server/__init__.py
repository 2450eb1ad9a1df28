"""rstream server."""
