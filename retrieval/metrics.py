"""Prometheus collectors of the retrieval worker (module level, fixed small label sets)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "ltrr_search_requests_total", "HTTP requests by route and status.", ["route", "status"]
)
SEARCH_LATENCY = Histogram(
    "ltrr_search_latency_seconds",
    "Time to answer /search (retrieve, decide, rank).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.1, 0.25, 0.5, 1),
)
DECISION_LATENCY = Histogram(
    "ltrr_policy_decision_seconds",
    "Features -> pmf -> sample time of one decision.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025),
)
STRATEGY_LATENCY = Histogram(
    "ltrr_strategy_latency_seconds",
    "Time of one strategy's retrieve call.",
    ["strategy"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1),
)
QUERY_EMBEDDINGS = Counter(
    "ltrr_query_embeddings_total",
    "Semantic query vectors by source: hit (LRU cache) or miss (encoded, in a micro-batch).",
    ["source"],
)
PLANS_CHOSEN = Counter("ltrr_plans_chosen_total", "Decisions by chosen plan.", ["plan"])
IMPRESSIONS = Counter(
    "ltrr_impressions_logged_total",
    "Impressions by outcome: sent, dropped (buffer full), failed.",
    ["outcome"],
)
IMPRESSION_BUFFER = Gauge(
    "ltrr_impression_buffer_size", "Impressions not yet acknowledged (old name of the next)."
)
IMPRESSIONS_BUFFERED = Gauge(
    "ltrr_impressions_buffered",
    "Impressions accepted and not yet acknowledged by the broker (buffered + in flight).",
)
ACTIONS = Counter("ltrr_actions_received_total", "POST /actions by outcome.", ["outcome"])
MODEL_VERSION = Gauge("ltrr_serving_model_version", "Snapshot version being served (0: none).")
MODEL_CREATED = Gauge(
    "ltrr_serving_model_created_seconds", "When the served snapshot was taken (Unix seconds)."
)
MODEL_AGE = Gauge("ltrr_serving_model_age_seconds", "Age of the served snapshot.")
MODEL_AGE.set_function(
    lambda: time.time() - MODEL_CREATED._value.get() if MODEL_CREATED._value.get() else 0.0
)
SNAPSHOT_LOAD = Histogram(
    "ltrr_snapshot_load_seconds",
    "Time to load and swap a snapshot.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
)
POLICY_FALLBACKS = Counter(
    "ltrr_policy_fallbacks_total",
    "Requests decided by the cold-start rule because the model gave no probability "
    "distribution (a plan with a negative or non-finite probability).",
)
SNAPSHOTS_REJECTED = Counter(
    "ltrr_snapshots_rejected_total", "Snapshots refused, by reason.", ["reason"]
)
CATALOG_UPDATES = Counter(
    "ltrr_catalog_updates_total", "Catalog-topic messages applied by outcome.", ["outcome"]
)
CATALOG_SIZE = Gauge("ltrr_catalog_entities", "Entities in the serving catalog.")
Q2E_REPLICA_UPDATES = Counter(
    "ltrr_q2e_replica_updates_total", "Q2E changelog rows applied to the local replica."
)
Q2E_REPLICA_REJECTED = Counter(
    "ltrr_q2e_replica_rejected_total",
    "Q2E changelog records skipped because they are not Q2E rows (no key, unknown prefix, "
    "undecodable value).",
)
CONSUMER_ERRORS = Counter(
    "ltrr_retrieval_consumer_errors_total", "Background consumer restarts, by topic.", ["topic"]
)
HTTP_CONNECTIONS = Gauge("ltrr_http_connections", "Open connections to the HTTP API.")
CONNECTIONS_REFUSED = Counter(
    "ltrr_http_connections_refused_total",
    "Connections answered 503 and closed because serve_max_connections were open.",
)
