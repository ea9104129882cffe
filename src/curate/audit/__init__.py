"""Audit: what every stage removed and why."""
