"""Keep tracking credentials out of everything normlight writes or prints.

A tracking URI may carry a secret: ``http://user:password@host`` (userinfo) or ``?token=...`` (a query value).
normlight never writes such a secret into a log line, a config artifact, a param, a tag or a child's command line:

- :func:`redact` replaces every userinfo and secret query value inside any text with ``***``;
- :func:`move_to_env` takes the userinfo of an http(s) URI out of the URI and into MLflow's own
  ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` variables of this process (inherited by the
  processes it starts), which is where MLflow reads basic-auth credentials from anyway.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote

MASK = "***"
# scheme://userinfo@ ... ; userinfo = anything up to the last '@' before the host, without '/', spaces or quotes
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s'\"]+)@")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:token|access_token|password|passwd|pwd|secret|api_key|apikey|key|sig|signature)=)"
    r"(?P<value>[^&#\s'\"]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with the userinfo of every URI and every secret query value replaced by ``***``."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _SECRET_QUERY.sub(lambda m: f"{m['key']}{MASK}", text)


def has_secret(uri: str) -> bool:
    """Whether ``uri`` carries userinfo or a secret query value."""
    return bool(uri) and redact(uri) != uri


def move_to_env(uri: str) -> str:
    """For an ``http(s)://user:password@host`` URI: set MLflow's ``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD`` (unless already set) and return the URI without the userinfo.
    Any other URI is returned unchanged (a database URI needs its userinfo: it is only redacted in output)."""
    m = _USERINFO.match(uri or "")
    if m is None or not m["scheme"].lower().startswith(("http://", "https://")):
        return uri
    user, _, password = m["userinfo"].partition(":")
    if "MLFLOW_TRACKING_USERNAME" not in os.environ and "MLFLOW_TRACKING_TOKEN" not in os.environ:
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(user)
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
    return m["scheme"] + uri[m.end() :]


__all__ = ["MASK", "has_secret", "move_to_env", "redact"]
