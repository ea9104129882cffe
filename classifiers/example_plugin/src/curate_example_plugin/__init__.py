"""An example curate plug-in: the ``keyword_topic`` classifier and the ``word_count`` stage.

curate loads both through entry points (see pyproject.toml); importing this package registers nothing.
"""
