"""The floors under one synchronous call on this machine: what a round trip
between two Python processes costs before any runtime work is done.

    python benchmarks/floors.py [--calls 5000]

Rows (median of --repeat runs, microseconds per round trip of 100 bytes):

- ``pipe``: multiprocessing.Pipe, send_bytes/recv_bytes (no pickling);
- ``grpc aio stream``: one bidirectional grpc.aio stream, client and
  server each on their own event loop (miniray's task streams);
- ``... + thread hop``: the same, the caller on another thread handing each
  call to the loop thread (miniray's driver: user thread -> io thread);
- ``grpc sync unary``: a blocking unary call (miniray's calls to the GCS).

Each gRPC row runs with gRPC's default EventEngine and with the EventEngine
client and listener off (what ``import miniray`` selects; see
docs/performance.md): the C core reads GRPC_EXPERIMENTS when
it starts, so each configuration runs in fresh processes.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import threading
import time

PAYLOAD = b"x" * 100
OLD_POLLER = "-event_engine_client,-event_engine_listener"


def _identity(data: bytes) -> bytes:
    return data


def _pipe_echo(conn) -> None:
    while True:
        message = conn.recv_bytes()
        if not message:
            return
        conn.send_bytes(message)


def pipe_round_trip(calls: int) -> float:
    ours, theirs = mp.Pipe()
    child = mp.Process(target=_pipe_echo, args=(theirs,), daemon=True)
    child.start()
    try:
        for _ in range(200):
            ours.send_bytes(PAYLOAD)
            ours.recv_bytes()
        start = time.perf_counter()
        for _ in range(calls):
            ours.send_bytes(PAYLOAD)
            ours.recv_bytes()
        return (time.perf_counter() - start) / calls
    finally:
        ours.send_bytes(b"")
        child.join(5)


def _grpc_server(port_queue) -> None:
    import grpc
    from grpc import aio

    async def echo_stream(requests, context):
        async for message in requests:
            yield message

    async def echo(request, context):
        return request

    async def serve():
        server = aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("floor.Echo", {
            "Stream": grpc.stream_stream_rpc_method_handler(echo_stream, _identity, _identity),
            "Unary": grpc.unary_unary_rpc_method_handler(echo, _identity, _identity)}),))
        port_queue.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()
    asyncio.run(serve())


def grpc_rows(calls: int) -> dict:
    """Run in a fresh process (GRPC_EXPERIMENTS is read once per process)."""
    import grpc
    from grpc import aio
    port_queue = mp.Queue()
    server = mp.Process(target=_grpc_server, args=(port_queue,), daemon=True)
    server.start()
    target = f"127.0.0.1:{port_queue.get(timeout=30)}"
    rows = {}

    async def same_thread():
        async with aio.insecure_channel(target) as channel:
            call = channel.stream_stream("/floor.Echo/Stream", _identity, _identity)()
            for _ in range(200):
                await call.write(PAYLOAD)
                await call.read()
            start = time.perf_counter()
            for _ in range(calls):
                await call.write(PAYLOAD)
                await call.read()
            elapsed = time.perf_counter() - start
            await call.done_writing()
            return elapsed / calls
    rows["grpc aio stream"] = asyncio.run(same_thread())

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def open_stream():
        channel = aio.insecure_channel(target)
        return channel.stream_stream("/floor.Echo/Stream", _identity, _identity)()
    call = asyncio.run_coroutine_threadsafe(open_stream(), loop).result()

    async def one():
        await call.write(PAYLOAD)
        return await call.read()

    def hop():
        asyncio.run_coroutine_threadsafe(one(), loop).result()
    rows["grpc aio stream + thread hop"] = _time(hop, calls)

    channel = grpc.insecure_channel(target)
    unary = channel.unary_unary("/floor.Echo/Unary", _identity, _identity)
    rows["grpc sync unary"] = _time(lambda: unary(PAYLOAD), calls)
    server.kill()
    return rows


def _time(op, calls: int) -> float:
    for _ in range(200):
        op()
    start = time.perf_counter()
    for _ in range(calls):
        op()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--grpc-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.grpc_child:
        print(json.dumps(grpc_rows(args.calls)))
        os._exit(0)          # the aio loops' threads would hold up exit
    results: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        results.setdefault("pipe", []).append(pipe_round_trip(args.calls))
        for label, experiments in (("default EventEngine", ""),
                                   ("EventEngine client/listener off", OLD_POLLER)):
            env = {**os.environ, "GRPC_EXPERIMENTS": experiments}
            done = subprocess.run([sys.executable, __file__, "--grpc-child",
                                   "--calls", str(args.calls)], env=env, check=True,
                                  capture_output=True, text=True, timeout=600)
            for name, seconds in json.loads(done.stdout.strip().splitlines()[-1]).items():
                results.setdefault(f"{name} ({label})", []).append(seconds)
    width = max(map(len, results))
    print(f"{'round trip of 100 bytes':{width}}  median us")
    for name, values in results.items():
        print(f"{name:{width}}  {statistics.median(values) * 1e6:9.0f}")


if __name__ == "__main__":
    main()
