"""The retrieval worker: strategies, plans, bandit policy, snapshot hot-load, HTTP API.

Filled by the retrieval-worker issue; it meets the agents only through topics."""
