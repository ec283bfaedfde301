"""The commands, one module each: ``train`` (flags → the gin-configured pipeline,
``westofn.train``), ``evaluate``, ``score``, ``export``, ``serve`` and ``label``, and what
they share (``common``: one-line user errors and exit codes, logging, the parsers).

Each runs as ``python -m westofn.<command>``: ``westofn/<command>.py`` is only that entry
point, so that the commands users and scripts already type keep working.
"""
