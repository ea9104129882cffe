"""Built-in per-document and global stages; importing this module registers them."""

from curate.stages import extract, language  # noqa: F401
