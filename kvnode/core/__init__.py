"""What the client and the server share, and nothing else: consistency levels, records and their
versions, membership, placement, errors, and the names and units people type.

Everything here imports only the standard library, grpc's status codes and the generated API
(``kvnode.api``). The client (``kvnode.client``) and the operator build on this package alone; the
server side (``kvnode.cluster``, ``kvnode.storage``, ``kvnode.server``) builds on it too.
"""
