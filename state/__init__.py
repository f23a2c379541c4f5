"""RocksDB-backed state (rocksdict): Q2E memory, join buffers, dedup sets, model checkpoints.

Filled by the learning-loop issue; nothing here imports agents or retrieval."""
