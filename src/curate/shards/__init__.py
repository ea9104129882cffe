"""Tokenized training shards: the on-disk formats a GPU trainer reads, a dataset over them and a smoke trainer."""
