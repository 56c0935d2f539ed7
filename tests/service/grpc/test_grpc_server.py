"""Health follows the registry (warming, ready, draining), reflection describes the
service, draining answers UNAVAILABLE and stop(grace) lets calls in flight finish."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from proto.sora.v1 import sora_pb2

pytestmark = pytest.mark.timeout(60)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = ("", "sora.v1.Sora")


async def statuses(channel: grpc.aio.Channel) -> set[int]:
    stub = health_pb2_grpc.HealthStub(channel)
    replies = [await stub.Check(health_pb2.HealthCheckRequest(service=s)) for s in SERVICES]
    return {r.status for r in replies}


async def wait_status(channel: grpc.aio.Channel, want: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while await statuses(channel) != {want}:
        assert time.monotonic() < deadline, f"health never became {want}"
        await asyncio.sleep(0.02)


async def test_health_not_serving_while_warming_then_serving(serve: Any) -> None:
    served = await serve(start=False)
    await served.server.start()  # the models are not loaded yet
    channel = served.channel()
    assert await statuses(channel) == {NOT_SERVING}
    await served.registry.load_all()
    await wait_status(channel, SERVING)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_draining_reads_not_serving_and_calls_are_unavailable(serve: Any) -> None:
    served = await serve()
    channel = served.channel()
    stub = served.stub()
    assert await statuses(channel) == {SERVING}
    served.server.set_serving(False)
    await wait_status(channel, NOT_SERVING)
    # Accepted work finishes during the drain; new work is refused.
    long = sora_pb2.TranslateRequest(texts=["Hello"], target_lang="de",
                                     options=sora_pb2.DecodingOptions(max_new_tokens=300,
                                                                      ignore_eos=True))
    in_flight = asyncio.ensure_future(stub.Translate(long))
    while served.engine._batch is None:
        await asyncio.sleep(0.005)
    drain = asyncio.ensure_future(served.registry.drain(10.0))
    await asyncio.sleep(0)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.Translate(sora_pb2.TranslateRequest(texts=["Hi"], target_lang="de"))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "draining" in (e.value.details() or "")
    reply = await in_flight
    assert reply.results[0].usage.completion_tokens == 300
    await drain
    served.server.set_serving(True)  # the registry is not ready: still NOT_SERVING
    await asyncio.sleep(0.1)
    assert await statuses(channel) == {NOT_SERVING}


async def test_stop_with_grace_lets_calls_in_flight_finish(serve: Any) -> None:
    served = await serve()
    stub = served.stub()
    request = sora_pb2.TranslateRequest(
        texts=["Hello"], target_lang="de",
        options=sora_pb2.DecodingOptions(max_new_tokens=200, ignore_eos=True),
    )
    in_flight = asyncio.ensure_future(stub.Translate(request))
    while served.engine._batch is None:
        await asyncio.sleep(0.005)
    await served.server.stop(grace=10.0)
    reply = await in_flight
    assert reply.results[0].usage.completion_tokens == 200
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.Translate(request, timeout=2)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_reflection_describes_the_service(serve: Any) -> None:
    served = await serve()
    stub = reflection_pb2_grpc.ServerReflectionStub(served.channel())
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="sora.v1.Sora"),
    ]
    listing, files = [r async for r in stub.ServerReflectionInfo(iter(requests))]
    names = {s.name for s in listing.list_services_response.service}
    assert {"sora.v1.Sora", "grpc.health.v1.Health"} <= names
    fd = descriptor_pb2.FileDescriptorProto.FromString(
        files.file_descriptor_response.file_descriptor_proto[0]
    )
    assert (fd.name, fd.package) == ("sora/v1/sora.proto", "sora.v1")
    methods = {m.name for m in fd.service[0].method}
    assert methods == {"Translate", "Summarize", "Answer", "GenerateStream", "ListModels",
                       "Detect"}
