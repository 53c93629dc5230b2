"""A bare grpc.aio server with the KV service's methods and messages, and no storage.

It is the ceiling for the node: the same requests arrive and responses of the same size leave, but
nothing is validated, stored, replicated or counted. ``Put`` returns a version like the node's,
``Get`` returns a found value of ``--value-size`` bytes under the requested key, and ``BatchWrite``
returns one version per mutation. The server uses grpc.aio's defaults, like a minimal service would.

    python bench/echo_server.py --listen 127.0.0.1:7100 --value-size 128
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc

from kvnode.api.v1 import kv_pb2, kv_pb2_grpc, types_pb2

Ctx = grpc.aio.ServicerContext[Any, Any]
# What a node's version looks like on the wire: an HLC near today's and a node id like "kv-0".
CANNED_VERSION = types_pb2.Version(hlc=(int(time.time() * 1000) << 16) | 7, node_id="kv-0")


class EchoKV(kv_pb2_grpc.KVServicer):
    def __init__(self, value_size: int) -> None:
        self.value = b"v" * value_size
        self.put_response = kv_pb2.PutResponse(version=CANNED_VERSION)

    async def Put(self, request: kv_pb2.PutRequest, context: Ctx) -> kv_pb2.PutResponse:
        return self.put_response

    async def Get(self, request: kv_pb2.GetRequest, context: Ctx) -> kv_pb2.GetResponse:
        return kv_pb2.GetResponse(
            kv=types_pb2.KeyValue(key=request.key, found=True, value=self.value, version=CANNED_VERSION)
        )

    async def BatchWrite(self, request: kv_pb2.BatchWriteRequest, context: Ctx) -> kv_pb2.BatchWriteResponse:
        return kv_pb2.BatchWriteResponse(versions=[CANNED_VERSION] * len(request.mutations))

    async def Delete(self, request: kv_pb2.DeleteRequest, context: Ctx) -> kv_pb2.DeleteResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the echo server has Put, Get and BatchWrite")

    async def Scan(self, request: kv_pb2.ScanRequest, context: Ctx) -> kv_pb2.ScanResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the echo server has Put, Get and BatchWrite")

    async def BatchGet(self, request: kv_pb2.BatchGetRequest, context: Ctx) -> kv_pb2.BatchGetResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the echo server has Put, Get and BatchWrite")


async def serve(listen: str, value_size: int) -> None:
    server = grpc.aio.server()
    kv_pb2_grpc.add_KVServicer_to_server(EchoKV(value_size), server)
    if not server.add_insecure_port(listen):
        raise SystemExit(f"echo server: cannot listen on {listen}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"echo server on {listen}", flush=True)
    await stop.wait()
    await server.stop(grace=1)


def start(listen: str, value_size: int) -> subprocess.Popen[bytes]:
    """Start an echo server process and wait until it answers."""
    process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--listen", listen, "--value-size", str(value_size)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    with grpc.insecure_channel(listen) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        while True:
            try:
                stub.Get(kv_pb2.GetRequest(key=b"ready"), timeout=1)
                return process
            except grpc.RpcError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise RuntimeError(f"the echo server on {listen} did not start") from None
                time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen", default="127.0.0.1:7100")
    parser.add_argument("--value-size", type=int, default=128)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen, args.value_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
