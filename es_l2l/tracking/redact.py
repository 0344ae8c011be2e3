"""Credentials never reach params, artifacts, checkpoints or the console.

A tracking URI such as ``https://user:secret@host/`` carries a password. es-l2l uses the URI as
given to talk to the server, but every copy it writes or prints goes through :func:`redact_uri`
(``https://***@host/``). Prefer ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``
(or ``MLFLOW_TRACKING_TOKEN``), which MLflow reads from the environment and es-l2l never records.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# the user info runs to the LAST '@' before the path: a password may hold '@' (http://user:p@ss@host)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s]+)@")
_QUERY_SECRET = re.compile(r"(?i)([?&](?:token|password|passwd|secret|key|access_token|sig)=)[^&\s]+")


def redact_uri(uri: str | None) -> str | None:
    """``uri`` without the user name and password (and secret-looking query values)."""
    if not uri:
        return uri
    out = _USERINFO.sub(lambda m: m.group("scheme") + "***@", uri)
    return _QUERY_SECRET.sub(lambda m: m.group(1) + "***", out)


def redact_text(text: str) -> str:
    """Every URI in ``text`` redacted (for error messages that quote one)."""
    return redact_uri(text) or text


def redact_logs() -> None:
    """Every log record of this process (MLflow's own loggers included: its system-metrics monitor logs
    the failing request's URL during an outage) has its URIs redacted before any handler sees it."""
    import logging

    make = logging.getLogRecordFactory()
    if getattr(make, "redacting", False):
        return

    def factory(*args, **kwargs):
        record = make(*args, **kwargs)
        try:
            text = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: logging reports it as it would
            return record
        safe = redact_text(text)
        if safe != text:
            record.msg, record.args = safe, None
        return record

    factory.redacting = True
    logging.setLogRecordFactory(factory)


def has_credentials(uri: str | None) -> bool:
    return bool(uri) and redact_uri(uri) != uri


def safe_config(cfg) -> dict[str, Any]:
    """``cfg.model_dump(mode="json")`` with the tracking URI redacted: what es-l2l writes anywhere."""
    tree = cfg.model_dump(mode="json")
    if tree.get("tracking", {}).get("uri"):
        tree["tracking"]["uri"] = redact_uri(tree["tracking"]["uri"])
    return tree


def safe_yaml(cfg) -> str:
    import yaml

    return yaml.safe_dump(safe_config(cfg), sort_keys=False)


def safe_flat(cfg) -> dict[str, Any]:
    from es_l2l.config import flatten

    return flatten(safe_config(cfg))


__all__ = ["redact_uri", "redact_text", "redact_logs", "has_credentials", "safe_config", "safe_yaml", "safe_flat", "urlsplit", "urlunsplit"]
