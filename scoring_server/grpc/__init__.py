"""The gRPC wire layer: the only code that imports ``grpc`` or the generated ``*_pb2`` modules."""
