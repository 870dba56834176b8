"""The store: metadata (users, tokens, jobs, events, metrics, checkpoints, models) in SQL."""

from elastrain.store.db import connect, database_url, upgrade
from elastrain.store.repository import JobInfo, ModelInfo, Store, UserInfo, hash_token

__all__ = ["JobInfo", "ModelInfo", "Store", "UserInfo", "connect", "database_url", "hash_token", "upgrade"]
