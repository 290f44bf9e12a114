"""Generated gRPC/protobuf code (see scripts/gen_protos.py). Do not edit."""
