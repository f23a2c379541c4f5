"""Streaming plumbing: settings, topic declarations, the Faust app factory, broker launchers."""
