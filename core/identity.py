"""Who is calling, and what they may do. Used by the API (api/auth.py) and the `patchpilot token` command.

Roles are ranked: viewer (read) < requester (chat, propose, cancel own) < approver (approve others' requests)
< admin (audit export, everything). Tokens are random; only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlmodel import Session

from core.models import ApiToken, utcnow

ROLES: tuple[str, ...] = ("viewer", "requester", "approver", "admin")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
TOKEN_PREFIX = "pp_"


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
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user=user, name=name, token_hash=hash_token(token), roles=sorted(set(roles))))
    session.commit()
    return token


def principal_for_token(session: Session, token: str) -> Principal | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = session.execute(select(ApiToken).where(ApiToken.token_hash == hash_token(token),
                                                 ApiToken.revoked_at.is_(None))).scalar_one_or_none()
    if row is None:
        return None
    session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=utcnow()))
    session.commit()
    return Principal(user=row.user, roles=frozenset(row.roles), via="token")


def principal_for_proxy(user: str, groups: list[str], role_groups: dict[str, str]) -> Principal:
    roles = frozenset(role_groups[g] for g in groups if g in role_groups)
    return Principal(user=user, roles=roles, via="proxy")


def revoke_token(session: Session, token_id: int) -> bool:
    result = session.execute(update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                             .values(revoked_at=utcnow()))
    session.commit()
    return result.rowcount == 1
