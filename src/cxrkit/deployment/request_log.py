"""The silent-mode request log: one row per image the server scored, never the image itself.

A SQLite file path (the default) or any SQLAlchemy database URL, e.g.
`postgresql+psycopg2://user@host/db` so that several servers log to one place (the
`postgres` extra installs the driver). Columns: time (UTC seconds since the epoch), model
id, operating point and its threshold, positive class, score (P(positive class); the top
probability for a multi-class model), all probabilities (JSON), decision, out-of-
distribution flag and score when the server provides them (else NULL), and the sha256 of
the uploaded file, by which confirmed outcomes are attached later.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from cxrkit.errors import CxrkitError

TABLE = "cxrkit_requests"


def database_url(text: str) -> str:
    """A SQLAlchemy URL: URLs pass through, anything else is a SQLite file path."""
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def _table(metadata):
    from sqlalchemy import Boolean, Column, Float, Index, Integer, String, Table, Text

    return Table(
        TABLE, metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("time", Float, nullable=False),
        Column("model_id", String(200), nullable=False),
        Column("operating_point", String(200)),
        Column("threshold", Float),
        Column("positive_class", String(200)),
        Column("score", Float, nullable=False),
        Column("probabilities", Text, nullable=False),
        Column("decision", String(200), nullable=False),
        Column("ood_flag", Boolean),
        Column("ood_score", Float),
        Column("image_sha256", String(64), nullable=False),
        Index(f"{TABLE}_image_sha256", "image_sha256"),
        Index(f"{TABLE}_time", "time"),
    )


def connect(text: str, create: bool = False):
    """(engine, table) for a log; `create` makes the table when the database has none."""
    from sqlalchemy import MetaData, create_engine, inspect
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    url = database_url(text)
    if url.startswith("sqlite:///") and not create and not Path(url[10:]).is_file():
        raise CxrkitError(f"{text}: no such request log; start `cxrkit serve ... --log {text}` "
                          "to record one")
    try:
        engine = create_engine(url)
        table = _table(MetaData())
        if create:
            table.metadata.create_all(engine)
        elif not inspect(engine).has_table(TABLE):
            raise CxrkitError(f"{text}: holds no cxrkit request log (no table {TABLE}); give the "
                              "`log` database of `cxrkit serve`")
    except (ArgumentError, NoSuchModuleError) as error:
        raise CxrkitError(f"log={text}: not a usable database URL ({error}); give a SQLite "
                          "file path or e.g. postgresql+psycopg2://user@host/db (pip install "
                          "'cxrkit[postgres]')") from error
    except DBAPIError as error:
        raise CxrkitError(f"{text}: not a readable database ({_first_line(error)}); check the "
                          "path or URL, or restore the log from a backup") from error
    return engine, table


def _first_line(error: Exception) -> str:
    return str(getattr(error, "orig", error)).splitlines()[0]


class RequestLog:
    """Appends one row per scored image; used by `cxrkit serve --log URL`."""

    def __init__(self, text: str):
        self.where = text
        self.engine, self.table = connect(text, create=True)

    def record(self, model_id: str, rows: list[dict]) -> None:
        """Log predictions: each row has probabilities, decision, threshold, positive_class,
        operating_point, image_sha256 and optionally ood_flag / ood_score."""
        now = time.time()
        values = []
        for row in rows:
            probabilities = row["probabilities"]
            positive = row.get("positive_class")
            score = probabilities[positive] if positive else max(probabilities.values())
            values.append({"time": now, "model_id": model_id,
                           "operating_point": row.get("operating_point"),
                           "threshold": row.get("threshold"), "positive_class": positive,
                           "score": float(score), "probabilities": json.dumps(probabilities),
                           "decision": row["decision"], "ood_flag": row.get("ood_flag"),
                           "ood_score": row.get("ood_score"),
                           "image_sha256": row["image_sha256"]})
        with self.engine.begin() as connection:
            connection.execute(self.table.insert(), values)
