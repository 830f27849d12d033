"""Secrets out of every message a user or a log sees: URL passwords and the values of secret settings.

Error messages quote URLs (a database or broker URL that cannot be parsed or reached) and sometimes
values from the environment; :func:`redact` is the one place that masks them, so an error shown before
login, in a terminal or in a job row never carries ``postgresql://workbench:<password>@...``.
Every :class:`workbench.errors.WorkbenchError` passes its message through it.
"""

from __future__ import annotations

import os
import re

MASK = "***"
#: ``scheme://user:password@`` (user may be empty, as in ``redis://:password@host``).
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s'\"]*):(?P<secret>[^@/\s'\"]+)@")
#: ``password=...`` in libpq connection strings and URL query parameters.
_KEY_VALUE = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd)\s*=\s*)(?P<secret>'[^']*'|\"[^\"]*\"|[^\s&;,]+)", re.I
)
#: Environment variables whose values are secrets wherever they appear (WORKBENCH_ID_SALT,
#: POSTGRES_PASSWORD, FLOWER_PASSWORD, WORKBENCH_OIDC_CLIENT_SECRET, ...).
_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|SALT|TOKEN|BASIC_AUTH|API_KEY|PRIVATE_KEY)", re.I)
#: Shorter values are not masked as literals: they would hide ordinary words and numbers.
MIN_SECRET_LENGTH = 4


def secret_values() -> list[str]:
    """Values of the environment's secret-named variables, longest first (so overlaps mask fully)."""
    values = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with URL passwords, ``password=`` values and known secret values replaced by ``***``."""
    out = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    out = _KEY_VALUE.sub(lambda m: f"{m['head']}{MASK}", out)
    for value in secret_values():
        out = out.replace(value, MASK)
    return out
