"""Who is calling, and what they may do. Used by the API (api/auth.py) and the `patchpilot token` command.

Roles are ranked: viewer (read) < requester (chat, propose, cancel own) < approver (approve others' requests)
< admin (audit export, everything). Tokens are random; only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlmodel import Session, col

from core.db import rows_changed
from core.models import ApiToken, UserRole, utcnow

ROLES: tuple[str, ...] = ("viewer", "requester", "approver", "admin")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
TOKEN_PREFIX = "pp_"

# The one rule for user names, wherever they come from (a token's owner, the OAuth proxy's header, a role grant):
# surrounding whitespace is dropped and letters are lower-cased; what is left must be 1-200 of a-z 0-9 . _ @ + -
# and must not start with one of = + - @ (a spreadsheet would read such a cell as a formula). Four-eyes,
# ownership and role grants compare these canonical names only, so "Bob ", "BOB" and "bob" are one person.
USER_NAME = re.compile(r"^[a-z0-9._][a-z0-9._@+-]{0,199}$")


class BadUserName(ValueError):
    pass


def canonical_user(raw: str) -> str:
    """The canonical form of a user name (see USER_NAME), or BadUserName with the reason."""
    name = (raw or "").strip().lower()
    if not USER_NAME.match(name):
        raise BadUserName(f"{raw.strip()[:60]!r} is not a valid user name: use 1-200 of a-z 0-9 . _ @ + - "
                          "(not starting with + - @)")
    return name


def strict_user(raw: str) -> str:
    """A name given by an administrator (token create, role grant): it must already be canonical. "bob " or
    "Bob" is refused rather than silently taken for "bob": a name that differs from another only by whitespace
    or case is never a second person."""
    name = canonical_user(raw)
    if name != raw:
        raise BadUserName(f"{raw!r} is not canonical: user names are lower-case without surrounding spaces; "
                          f"did you mean {name!r}?")
    return name


@dataclass(frozen=True)
class Principal:
    user: str
    roles: frozenset[str]
    via: str  # "token" | "proxy"

    @property
    def rank(self) -> int:
        return max((ROLE_RANK[r] for r in self.roles if r in ROLE_RANK), default=-1)

    def has(self, role: str) -> bool:
        return self.rank >= ROLE_RANK[role]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, *, user: str, roles: list[str], name: str = "") -> str:
    unknown = [r for r in roles if r not in ROLE_RANK]
    if unknown or not roles:
        raise ValueError(f"roles must be some of {', '.join(ROLES)}; got {', '.join(roles) or 'none'}")
    user = strict_user(user)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user=user, name=name, token_hash=hash_token(token), roles=sorted(set(roles))))
    session.commit()
    return token


def principal_for_token(session: Session, token: str) -> Principal | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = session.execute(select(ApiToken).where(col(ApiToken.token_hash) == hash_token(token),
                                                 col(ApiToken.revoked_at).is_(None))).scalar_one_or_none()
    if row is None:
        return None
    session.execute(update(ApiToken).where(col(ApiToken.id) == row.id).values(last_used_at=utcnow()))
    session.commit()
    try:
        user = canonical_user(row.user)  # a row written before names were canonical ("bob ") is still bob
    except BadUserName:
        return None
    return Principal(user=user, roles=frozenset(row.roles), via="token")


def principal_for_proxy(user: str, groups: list[str], role_groups: dict[str, str]) -> Principal:
    """Roles from groups the proxy vouches for (only when PROXY_GROUPS_HEADER is set: see the README)."""
    roles = frozenset(role_groups[g] for g in groups if g in role_groups)
    return Principal(user=canonical_user(user), roles=roles, via="proxy")


def roles_of(session: Session, user: str) -> frozenset[str]:
    """The roles granted to a user in patchpilot's own table (proxy mode: `patchpilot role grant`)."""
    row = session.get(UserRole, canonical_user(user))
    return frozenset(row.roles) if row is not None else frozenset()


def grant_roles(session: Session, *, user: str, roles: list[str], granted_by: str) -> list[str]:
    """Set a user's roles (replacing earlier ones); an empty list removes the user. Returns the roles now held."""
    unknown = [r for r in roles if r not in ROLE_RANK]
    if unknown:
        raise ValueError(f"roles must be some of {', '.join(ROLES)}; got {', '.join(unknown)}")
    user = strict_user(user)
    row = session.get(UserRole, user, with_for_update=True)
    if not roles:
        if row is not None:
            session.delete(row)
    elif row is None:
        session.add(UserRole(user=user, roles=sorted(set(roles)), granted_by=granted_by))
    else:
        row.roles, row.granted_by, row.granted_at = sorted(set(roles)), granted_by, utcnow()
    from core.states import audit

    audit(session, actor=granted_by, action="roles_granted", reason=f"{user}: {','.join(sorted(set(roles))) or 'none'}",
          detail={"user": user, "roles": sorted(set(roles))})
    session.commit()
    return sorted(set(roles))


def list_roles(session: Session) -> list[UserRole]:
    return list(session.execute(select(UserRole).order_by(UserRole.user)).scalars())


def revoke_token(session: Session, token_id: int) -> bool:
    result = session.execute(update(ApiToken).where(col(ApiToken.id) == token_id, col(ApiToken.revoked_at).is_(None))
                             .values(revoked_at=utcnow()))
    session.commit()
    return rows_changed(result) == 1
