"""Built-in per-document and global stages; importing this module registers them."""

from curate.io import warc  # noqa: F401
from curate.stages import extract, language, quarantine  # noqa: F401
