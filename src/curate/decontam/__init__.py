"""Benchmark decontamination: an n-gram index of evaluation sets, and the stage that looks documents up in it."""
