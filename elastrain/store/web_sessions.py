"""Dashboard logins: a session is opened with an API token and named by a random cookie value, of
which only the SHA-256 is stored. It ends at logout, at its expiry, or when its token is revoked."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from elastrain.store.repository import Store, UserInfo, hash_token
from elastrain.store.schema import Token, User, WebSession

SESSION_LIFETIME = timedelta(hours=12)


def open_session(store: Store, token: str, lifetime: timedelta = SESSION_LIFETIME) -> tuple[str, UserInfo] | None:
    """A new session for the holder of the live API `token`: (the cookie value, returned only
    here, and its user); None if the token is unknown or revoked. Expired sessions are dropped."""
    now = datetime.now(UTC)
    with store.session.begin() as session:
        row = session.execute(select(Token.id, User).join(User, User.id == Token.user_id)
                              .where(Token.token_hash == hash_token(token), Token.revoked_at.is_(None))).first()
        if row is None:
            return None
        token_id, user = row
        session.execute(delete(WebSession).where(WebSession.expires_at < now))
        value = secrets.token_urlsafe(32)
        session.add(WebSession(session_hash=hash_token(value), token_id=token_id, created_at=now,
                               expires_at=now + lifetime))
        return value, UserInfo(user.id, user.name, user.is_admin)


def session_user(store: Store, value: str) -> UserInfo | None:
    """The user of the live session named by the cookie `value`, or None."""
    with store.session() as session:
        user = session.scalar(
            select(User).join(Token, Token.user_id == User.id).join(WebSession, WebSession.token_id == Token.id)
            .where(WebSession.session_hash == hash_token(value), WebSession.expires_at > datetime.now(UTC),
                   Token.revoked_at.is_(None)))
        return UserInfo(user.id, user.name, user.is_admin) if user else None


def close_session(store: Store, value: str) -> None:
    """End the session named by the cookie `value` (nothing if there is none)."""
    with store.session.begin() as session:
        session.execute(delete(WebSession).where(WebSession.session_hash == hash_token(value)))
