"""Several broker nodes as one (docs/cluster.md): the bus between nodes (in-process on a
single node, NATS in a cluster), each node's presence and the control messages it acts on,
and the endpoints a load balancer and Prometheus ask (``/readyz``, ``/metrics``)."""
