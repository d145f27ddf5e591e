"""This node's own disk: the data directory's layout, chunk store and cache, upload spool."""
