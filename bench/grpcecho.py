"""The gRPC instance of the benchmark: a unary method /bench.Echo/Unary that answers every
call with the same 16-byte message, from python3-grpcio's generic handlers (no protoc).
Usage: grpcecho.py PORT"""
import sys
from concurrent import futures

import grpc

REPLY = b"zkgate-bench-ok!"


def unary(request, context):
    return REPLY


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.method_handlers_generic_handler("bench.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=None, response_serializer=None)})
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
