"""The Open Inference Protocol's `inference.GRPCInferenceService`, served beside
`sora.v1.Sora` on the same grpc.aio server and registry: decode with service/oip/proto,
plan and submit with service/oip/infer, map errors with service/grpc/errors.

Every element of a ModelInfer request is submitted before any is awaited, so they
batch together; a cancelled or expired call cancels its jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor

from proto.inference import grpc_service_pb2 as pb
from proto.inference import grpc_service_pb2_grpc as pb_grpc
from service.engine.errors import DeadlineExceeded, EngineError, ModelNotFound
from service.engine.protocol import EngineClient
from service.engine.registry import ModelRegistry
from service.grpc.errors import to_grpc
from service.grpc.servicer import RejectionRecorder
from service.oip import PROTOCOL_GRPC
from service.oip.infer import make_plan, oip_error, output_tensors, submit, task_label, wait
from service.oip.metadata import model_metadata, server_metadata
from service.oip.proto import (
    infer_response,
    model_metadata_response,
    parse_infer_request,
    server_metadata_response,
)

log = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


class OipServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        registry: ModelRegistry,
        *,
        serving: Callable[[], bool] | None = None,
        max_batch_texts: int = 64,
        default_timeout: float | None = None,
        metrics: RejectionRecorder | None = None,
    ) -> None:
        self.registry = registry
        # Server readiness (the gRPC server's own view: registry ready, not draining).
        self.serving = serving or (lambda: registry.ready)
        self.max_batch_texts = max_batch_texts
        self.default_timeout = default_timeout  # seconds, when the call sets none
        self.metrics = metrics

    # -- health and metadata -----------------------------------------------------------

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.serving())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        """False (not an error) for a model or version that is not served."""
        try:
            engine = self.registry.get(request.name or None, request.version or None)
        except ModelNotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=engine.ready and self.serving())

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return server_metadata_response(server_metadata())

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        try:
            engine = self.registry.get(request.name or None, request.version or None)
        except EngineError as e:
            await _abort(context, oip_error(e))
            raise AssertionError("unreachable: abort raises") from None
        return model_metadata_response(model_metadata(engine))

    # -- inference ---------------------------------------------------------------------

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        engine: EngineClient | None = None
        task = "unknown"
        try:
            engine = self.registry.get(request.model_name or None,
                                       request.model_version or None)
            infer = parse_infer_request(request)
            task = task_label(infer)
            plan = make_plan(infer, engine, max_texts=self.max_batch_texts)
            self.registry.route(plan.inputs, engine.name, engine.version)
            timeout = self._timeout(context, plan.timeout)
            jobs = submit(engine, plan, protocol=PROTOCOL_GRPC, request_id=infer.id or None,
                          timeout=timeout)
        except EngineError as e:
            self._rejected(engine, task, e)
            await _abort(context, oip_error(e))
            raise AssertionError("unreachable: abort raises") from None
        try:
            completions = await wait(jobs)  # cancels the jobs if the call goes away
        except EngineError as e:
            await _abort(context, e)
            raise AssertionError("unreachable: abort raises") from None
        return infer_response(infer, engine.name, engine.version,
                              output_tensors(plan, completions))

    # -- shared ------------------------------------------------------------------------

    def _timeout(self, context: grpc.aio.ServicerContext, requested: float | None) -> float | None:
        """The tightest of the call's deadline, the `timeout` parameter and the server
        default (which applies only when the call sets neither)."""
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded("the call's deadline passed before it was scheduled")
        given = [t for t in (remaining, requested) if t is not None]
        return min(given) if given else self.default_timeout

    def _rejected(self, engine: EngineClient | None, task: str, error: EngineError) -> None:
        """Count a request the engine never accepted."""
        if self.metrics is None:
            return
        try:
            self.metrics.request_rejected(
                engine.name if engine else None, task, PROTOCOL_GRPC, error.code
            )
        except Exception:
            log.exception("metrics: recording a rejection failed")


async def _abort(context: grpc.aio.ServicerContext, error: EngineError) -> None:
    status = to_grpc(error)
    await context.abort(status.code, status.details, trailing_metadata=status.trailing_metadata)


def reflection_pool(service_names: Iterable[str]) -> descriptor_pool.DescriptorPool:
    """A descriptor pool for server reflection holding the files that define
    `service_names` (looked up in the default pool) and the OIP service. The OIP stubs
    live in their own pool (see scripts/gen_proto.sh), so the default one cannot
    describe them."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
        added.add(file.name)

    default = descriptor_pool.Default()
    for name in service_names:
        if name != SERVICE_NAME:
            add(default.FindServiceByName(name).file)
    add(pb.DESCRIPTOR)
    return pool
