"""settings.ini -> one typed, validated :class:`Config` (the table of settings: :mod:`.settings`).

- :mod:`.settings`: every setting declared once (type, default, group, help), reading and checking;
- :mod:`.rules`: the rules between settings; :mod:`.parsers`: the value parsers;
- :mod:`.search_space`: ``TUNING_SPACE``, the search space of the tuning step.
"""

from ml_exp.config.settings import (
    GROUPS,
    KNOWN_KEYS,
    RENAMED,
    SECRET_KEYS,
    SECTION,
    SETTINGS,
    SETTINGS_FILE,
    STEPS,
    Config,
    Setting,
    load_config,
    read_settings_file,
)

__all__ = [
    "GROUPS",
    "KNOWN_KEYS",
    "RENAMED",
    "SECRET_KEYS",
    "SECTION",
    "SETTINGS",
    "SETTINGS_FILE",
    "STEPS",
    "Config",
    "Setting",
    "load_config",
    "read_settings_file",
]
