"""Who acts: a registered user (a plain ``str``, always role-checked) or the local operator.

The local operator is whoever runs the workbench on the server itself (a shell command, the demo,
in-process library calls): they can read the settings and the database anyway, so role checks do not
apply to them. It is a distinct type, never a name: only code that constructs :class:`LocalOperator`
gets the operator's rights. Anything that comes from outside (``--as NAME``, a login form, OIDC
claims, a database row) is a plain string and therefore a user name.

:class:`LocalOperator` subclasses ``str`` so that it is recorded as itself wherever an actor is stored
or shown (job rows, import batches, promotions, bundle manifests): ``operator:cli``. That text cannot be
a user name (``:`` is not allowed in one), and reading it back from a job row is the one place where
it turns into the operator again (:func:`actor_from_record`, used by the job context).
"""

from __future__ import annotations

from typing import TypeAlias

from workbench.errors import ValidationError

RECORD_PREFIX = "operator:"
# auto: the automatic retraining trigger (``rounds.trigger_round_if_due``), recorded as ``operator:auto``
ORIGINS = ("cli", "demo", "local", "auto")
# Names that meant the operator before it was a type, and the word of its record: no user may take
# them, so old records and logs ("by cli") never name a real user. Compared case-insensitively.
RESERVED_NAMES = frozenset({"cli", "demo", "system", "operator", "local"})


class LocalOperator(str):
    """The local operator, from ``origin`` (``cli``, ``demo``, ``local``: an in-process caller, or
    ``auto``: the automatic retraining trigger, acting on the operator's setting).

    Its string value is its record, e.g. ``operator:cli``.
    """

    __slots__ = ()

    def __new__(cls, origin: str) -> LocalOperator:
        if origin not in ORIGINS:
            raise ValueError(f"operator origin must be one of {', '.join(ORIGINS)}, got {origin!r}")
        return super().__new__(cls, RECORD_PREFIX + origin)

    @property
    def origin(self) -> str:
        """Where the operator acts from."""
        return self[len(RECORD_PREFIX) :]

    def __getnewargs__(self) -> tuple[str]:  # copy and pickle rebuild it from its origin
        return (self.origin,)

    def __repr__(self) -> str:
        return f"LocalOperator({self.origin!r})"


Actor: TypeAlias = str | LocalOperator  # a user name, or the operator

CLI_OPERATOR = LocalOperator("cli")
DEMO_OPERATOR = LocalOperator("demo")
LOCAL_OPERATOR = LocalOperator("local")


def is_operator(actor: object) -> bool:
    """Whether ``actor`` is the local operator (by type: no string is)."""
    return isinstance(actor, LocalOperator)


def actor_from_record(record: str) -> Actor:
    """The actor a stored requester stands for: ``operator:<origin>`` is the operator, else a user name.

    Only for records the workbench wrote itself (job rows): job rows are created by ``submit_job``,
    which records the operator only for a :class:`LocalOperator` caller.
    """
    origin = record[len(RECORD_PREFIX) :] if record.startswith(RECORD_PREFIX) else None
    if origin in ORIGINS:
        return LocalOperator(origin)
    return record


def check_not_reserved(name: str) -> str:
    """``name`` unless it is reserved for the operator (ValidationError saying so)."""
    if name.strip().lower() in RESERVED_NAMES:
        raise ValidationError(
            f"user name {name.strip()!r} is reserved (reserved: {', '.join(sorted(RESERVED_NAMES))}); "
            "choose another"
        )
    return name
