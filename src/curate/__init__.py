"""curate: Ray-distributed web-crawl curation for language-model pretraining corpora."""

__version__ = "0.1.0"
