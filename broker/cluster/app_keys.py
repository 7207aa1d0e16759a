"""The app's handles on the cluster: this node's member and its background work. In a
module of their own so that the feature (broker.cluster.feature), the node's local actions
and the API reach them without importing one another."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from broker.cluster.node import ClusterNode
from broker.supervision import Supervisor

CLUSTER: Final = web.AppKey("cluster", ClusterNode)
#: The cluster feature's background work (a drain).
CLUSTER_TASKS: Final = web.AppKey("cluster_tasks", Supervisor)
#: The name of a single node's in-process member (it is in no cluster).
SINGLE: Final = "single"
