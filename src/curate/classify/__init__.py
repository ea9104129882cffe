"""Model-based classifier stages (fastText, transformer)."""
