"""The imeireg service: IMEI parsing, the LMDB registry store, importers, policy and gRPC server."""
