"""The Open Inference Protocol (KServe v2 / Triton) front-end logic shared by REST
(service/http/routes/oip.py) and gRPC (service/grpc/oip_servicer.py):

- tensors.py   datatypes, shapes, the raw byte encoding (BYTES: 4-byte LE lengths)
- infer.py     decoded request -> engine inputs + DecodingParams -> output tensors
- metadata.py  server and model metadata
- rest.py      the JSON (+ binary data extension) encoding
- proto.py     the protobuf encoding (proto/inference/grpc_service.proto)
"""

PROTOCOL_HTTP = "oip-http"  # the `protocol` label of requests from each front end
PROTOCOL_GRPC = "oip-grpc"
