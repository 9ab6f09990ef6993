"""The engine: runs compiled once per shape, batched over runs, sharded over devices."""
