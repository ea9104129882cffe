"""Deduplication stages (exact, MinHash LSH)."""
