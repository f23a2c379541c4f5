"""RocksDB-backed state (rocksdict): Q2E memory, join buffers, dedup sets, model checkpoints.

Nothing here imports agents or retrieval."""
