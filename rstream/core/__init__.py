"""The pure state-stream engine: no sockets, no threads beyond a lock."""
