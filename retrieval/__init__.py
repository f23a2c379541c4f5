"""The retrieval worker: strategies, plans, bandit policy, snapshot hot-load, HTTP API.

It meets the agents only through topics (impressions, snapshots, Q2E, catalog)."""
