"""The PostgreSQL state store: :class:`PostgresStore` (selected by a ``postgresql://`` store URL)."""

from runtime.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
