"""What the commands share: ``common`` (one-line user errors and exit codes, logging, the
parsers) and ``main``, the ``westofn <command>`` console script. Each command lives in one
module, ``westofn/<command>.py`` (``train``, ``evaluate``, ``score``, ``export``, ``serve``,
``label``), run as ``python -m westofn.<command>`` or ``westofn <command>``."""
