"""The router's database: peewee models bound at start-up.

SQLite in WAL mode is the embedded default. Every query goes through peewee,
so the same models can later run against another database URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import peewee
from playhouse.db_url import connect

SCHEMA_VERSION = 1

database_proxy = peewee.DatabaseProxy()


class BaseModel(peewee.Model):
    class Meta:
        database = database_proxy


class SchemaVersion(BaseModel):
    """One row that stores the schema version this database was created with."""

    version = peewee.IntegerField()


class SchemaTooNew(RuntimeError):
    """Raised when the database was written by a newer yicrouter."""


@contextmanager
def session(database: peewee.Database) -> Iterator[None]:
    """Run the block on this thread's connection to `database`, opened once and kept open.

    peewee's connection_context() opens and closes a connection per block,
    and SQLite then runs its pragmas each time: about 6% of the router's
    CPU time in a relay, two blocks per instance (docs/benchmarks.md).
    Each thread keeps its own connection; it closes when the thread ends.
    """
    if database.is_closed():
        database.connect()
    yield


def open_database(state_dir: Path, models: list[type[BaseModel]], url: str = "") -> peewee.Database:
    """Open (creating if needed) the database and its tables.

    `url` is a peewee database URL; "" means the SQLite file in `state_dir`.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    url = url or f"sqlite:///{state_dir / 'yicrouter.sqlite3'}"
    options: dict[str, object] = {}
    if url.startswith("sqlite"):
        options["pragmas"] = {"journal_mode": "wal", "synchronous": "normal", "busy_timeout": 10000}
    database = connect(url, **options)
    database_proxy.initialize(database)
    with database.connection_context():
        database.create_tables([SchemaVersion, *models], safe=True)
        row = SchemaVersion.select().first()
        if row is None:
            SchemaVersion.create(version=SCHEMA_VERSION)
        elif row.version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{url} has schema version {row.version}, but this yicrouter "
                f"supports up to {SCHEMA_VERSION}; upgrade yicrouter or use another state_dir"
            )
    return database  # type: ignore[no-any-return]
