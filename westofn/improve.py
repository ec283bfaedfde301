"""Where ``Rest`` and ``Dpo`` lived before ``westofn.settings``: a ``config.gin`` written then
binds ``westofn.improve.Rest``, and reads back through these names. New code imports
``westofn.settings`` (the settings) and ``westofn.policy_measures`` (what is measured)."""

from westofn.settings import Dpo, Rest  # noqa: F401
