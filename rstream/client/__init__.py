"""rstream client."""
