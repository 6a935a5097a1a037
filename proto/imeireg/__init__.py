"""imeireg: the national IMEI registry lookup service.

`imeireg.v1` is the generated gRPC API, `imeireg.server` the service, its store
and importers, and `imeireg.client` the Python client.
"""
