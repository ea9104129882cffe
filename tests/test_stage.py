"""Stage lifecycle."""

from __future__ import annotations


def test_close_without_setup_is_a_no_op() -> None:
    """A worker whose inputs held no document closes stages that were never set up."""
    from curate.stages.extract import Extract

    stage = Extract()
    stage.close()
    stage.close()
