"""gRPC's standard error details as the server sends them (`grpc-status-details-bin`): the
`google.rpc.Status` with `ErrorInfo` (a reason such as QUEUE_FULL, DRAINING,
EXCEEDS_MEMORY), `RetryInfo` (how long to wait before sending the work again) and
`BadRequest` (the field at fault).

The messages are declared here, wire-compatible with google/rpc/*.proto, in a descriptor pool
of their own, so the package needs no googleapis-common-protos and never clashes with it."""

from dataclasses import dataclass, field
from typing import List, Optional

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_TYPE = descriptor_pb2.FieldDescriptorProto


def _message(file, name, *fields):
    message = file.message_type.add(name=name)
    for number, (field_name, kind, label, type_name) in enumerate(fields, start=1):
        entry = message.field.add(name=field_name, number=number, type=kind, label=label)
        if type_name:
            entry.type_name = type_name


def _classes():
    file = descriptor_pb2.FileDescriptorProto(name="stylize_client/rpc_details.proto",
                                              package="stylize_client.rpc", syntax="proto3")
    optional, repeated = _TYPE.LABEL_OPTIONAL, _TYPE.LABEL_REPEATED
    pkg = ".stylize_client.rpc."
    _message(file, "Any", ("type_url", _TYPE.TYPE_STRING, optional, None),
             ("value", _TYPE.TYPE_BYTES, optional, None))
    _message(file, "Status", ("code", _TYPE.TYPE_INT32, optional, None),
             ("message", _TYPE.TYPE_STRING, optional, None),
             ("details", _TYPE.TYPE_MESSAGE, repeated, pkg + "Any"))
    _message(file, "ErrorInfo", ("reason", _TYPE.TYPE_STRING, optional, None),
             ("domain", _TYPE.TYPE_STRING, optional, None))
    _message(file, "Duration", ("seconds", _TYPE.TYPE_INT64, optional, None),
             ("nanos", _TYPE.TYPE_INT32, optional, None))
    _message(file, "RetryInfo", ("retry_delay", _TYPE.TYPE_MESSAGE, optional, pkg + "Duration"))
    _message(file, "FieldViolation", ("field", _TYPE.TYPE_STRING, optional, None),
             ("description", _TYPE.TYPE_STRING, optional, None))
    _message(file, "BadRequest",
             ("field_violations", _TYPE.TYPE_MESSAGE, repeated, pkg + "FieldViolation"))
    pool = descriptor_pool.DescriptorPool()
    descriptor = pool.AddSerializedFile(file.SerializeToString())
    return {name: message_factory.GetMessageClass(descriptor.message_types_by_name[name])
            for name in descriptor.message_types_by_name}


_CLASSES = _classes()
_HEADER = "grpc-status-details-bin"


@dataclass
class ErrorDetails:
    """What a failed call's status says beyond its code and message."""
    #: ErrorInfo's reason (QUEUE_FULL, DRAINING, EXCEEDS_MEMORY, INVALID_ARGUMENT, ...).
    reason: Optional[str] = None
    #: RetryInfo's delay in seconds: set only when the server says the work may be sent again.
    retry_delay: Optional[float] = None
    #: BadRequest's field violations as (field, description).
    field_violations: List[tuple] = field(default_factory=list)


def details_of(error) -> ErrorDetails:
    """The standard details of a `grpc.RpcError` (empty when it carries none)."""
    found = ErrorDetails()
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    raw = next((value for key, value in (trailing or ()) if key == _HEADER), None)
    if not raw:
        return found
    status = _CLASSES["Status"].FromString(raw)
    for detail in status.details:
        kind = detail.type_url.rsplit("/", 1)[-1]
        if kind == "google.rpc.ErrorInfo":
            found.reason = _CLASSES["ErrorInfo"].FromString(detail.value).reason
        elif kind == "google.rpc.RetryInfo":
            delay = _CLASSES["RetryInfo"].FromString(detail.value).retry_delay
            found.retry_delay = delay.seconds + delay.nanos / 1e9
        elif kind == "google.rpc.BadRequest":
            request = _CLASSES["BadRequest"].FromString(detail.value)
            found.field_violations = [(v.field, v.description) for v in request.field_violations]
    return found
