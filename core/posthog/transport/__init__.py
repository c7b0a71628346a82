"""Queueing and HTTP delivery of events."""
