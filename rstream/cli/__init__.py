"""rstream cli."""
