"""OIDC admission: from an identity provider's claims to a workbench user name, or a specific refusal.

A pure function of the claims and the settings (no database, no Streamlit), so that the rules are
tested directly and the UI only calls it:

- the name is the ``email`` claim when there is one, and then only if ``email_verified`` is true
  (an unverified address must never match an existing account, an admin's included); otherwise
  ``preferred_username``, then ``sub``;
- the name must be a valid, non-reserved user name (no ``cli``, ``system``, ...);
- with an allow-list configured (``oidc_allowed_domains`` / ``oidc_allowed_groups``), the verified
  email's domain or one of the ``groups`` must be on it.

An admitted name still needs an approved, active account (:func:`workbench.users.ensure_oidc_user`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workbench.config import Settings
from workbench.errors import PermissionDenied, ValidationError
from workbench.users import check_username


class OidcRefused(PermissionDenied):
    """The identity provider's account may not use the workbench; the message says why."""


def _verified(value: Any) -> bool:
    """``email_verified`` as providers send it: a boolean, or the string ``"true"`` (some do)."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _groups(claims: Mapping[str, Any]) -> set[str]:
    value = claims.get("groups")
    if isinstance(value, str):
        return {value}
    if isinstance(value, list | tuple | set):
        return {str(g) for g in value}
    return set()


def _name(claims: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """(name, the claim it came from, the verified email's domain or None)."""
    email = str(claims.get("email") or "").strip()
    if email:
        if not _verified(claims.get("email_verified")):
            raise OidcRefused(
                f"the identity provider has not verified the email address {email!r}; verify it there "
                "and sign in again"
            )
        domain = email.rsplit("@", 1)[1].lower() if "@" in email else None
        return email.lower(), "email", domain
    for claim in ("preferred_username", "sub"):
        value = str(claims.get(claim) or "").strip()
        if value:
            return value, claim, None
    raise OidcRefused("the identity provider sent no email, preferred_username or sub claim")


def admitted_username(claims: Mapping[str, Any], settings: Settings) -> str:
    """The user name for these claims; :class:`OidcRefused` saying why when they are not admitted."""
    name, claim, domain = _name(claims)
    try:
        check_username(name)
    except ValidationError as exc:
        raise OidcRefused(f"the {claim} claim {name!r} cannot be a workbench user name: {exc}") from None
    domains, groups = set(settings.oidc_allowed_domains), set(settings.oidc_allowed_groups)
    if not domains and not groups:
        return name
    if domain is not None and domain in domains:
        return name
    if _groups(claims) & groups:
        return name
    allowed = [
        f"email domains {', '.join(sorted(domains))}" if domains else "",
        "listed groups" if groups else "",
    ]
    raise OidcRefused(
        f"{name} is not admitted: only accounts from {' or '.join(a for a in allowed if a)} may sign in"
        + ("" if domain or not domains else " (no verified email was sent)")
    )
