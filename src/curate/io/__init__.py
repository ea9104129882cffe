"""Readers: input files to document batches."""
