"""Cluster mode: several ``sluice serve`` processes sharing one PostgreSQL state store (no other
coordinator). See :mod:`runtime.cluster.member`."""

from runtime.cluster.member import ClusterMember

__all__ = ["ClusterMember"]
