"""Router configuration: the TOML main file plus its `yicrouter.d/` drop-ins.

`load_config` reads the main file, then each `*.toml` file in the `yicrouter.d/`
folder beside it. It checks every file before it raises, so one `ConfigError`
lists all problems, one line each, with the file, key, value and fix.

`files` reads and parses each file, and `documents` splits it into tables.
`tables` checks each table's keys against `schema`, whose value checks are in
`values`, and compares the `[queue]` retry delays. `duplicates` then checks names and AE titles across all files.
`loader` runs these steps and builds the `settings` dataclasses. `problems`
formats the problem lines and defines `ConfigError`.
"""

from yicrouter.config.files import DROP_IN_FOLDER_NAME
from yicrouter.config.loader import check_config, load_config
from yicrouter.config.problems import ConfigError
from yicrouter.config.settings import (
    Config,
    PeerSettings,
    QueueSettings,
    RouterSettings,
    WorkstationSettings,
)
from yicrouter.config.values import (
    AE_TITLE_MAX_LENGTH,
    BATCH_SIZE_MAX,
    DATABASE_URL_SCHEMES,
    LOG_FORMATS,
    LOG_LEVELS,
    MAX_PDU_MAX,
    MAX_PDU_MIN,
    MAX_PDU_NO_LIMIT,
)

__all__ = [
    "AE_TITLE_MAX_LENGTH",
    "BATCH_SIZE_MAX",
    "DATABASE_URL_SCHEMES",
    "DROP_IN_FOLDER_NAME",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MAX_PDU_MAX",
    "MAX_PDU_MIN",
    "MAX_PDU_NO_LIMIT",
    "Config",
    "ConfigError",
    "PeerSettings",
    "QueueSettings",
    "RouterSettings",
    "WorkstationSettings",
    "check_config",
    "load_config",
]
