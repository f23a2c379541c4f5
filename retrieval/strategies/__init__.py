"""Retrieval strategies: each module implements ``Strategy`` (``retrieval/strategies/base.py``)."""
