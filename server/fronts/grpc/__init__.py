"""The gRPC front: imeireg.v1.LegalityService. `wire` reads and writes the check messages
as columns (byte for byte what protobuf would); `servicer` validates and answers."""
