"""Redis: the client factory, redis-server, the Streams transport and its parts, leases, partitions,
the source registry, dead letters.
"""
