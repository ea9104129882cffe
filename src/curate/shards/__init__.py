"""Tokenized training shards: the on-disk formats a GPU trainer reads, a dataset over them and a smoke trainer.

``curate.shards.TokenDataset`` is imported on first use, so a pipeline that only writes shards does not
import torch.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "TokenDataset":
        from curate.shards.dataset import TokenDataset

        return TokenDataset
    raise AttributeError(f"module 'curate.shards' has no attribute {name!r}")
