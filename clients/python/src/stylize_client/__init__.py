"""A Python client for the stylize server: submit a still or a shot (a sequence of frames with
their motion) and iterate its events, register styles, write results. Retries with backoff on RESOURCE_EXHAUSTED and UNAVAILABLE (the
server's retryable answers: a full queue, a draining replica), honours an overall deadline,
and speaks TLS and bearer tokens.

    from stylize_client import Client
    client = Client("localhost:50051")
    result = client.stylize_to_file("cat.png", ["starry.jpg"], "out.png", size=256, quality="standard")
"""

from .client import IN_CONTENT, Client, StylizeError, blender_frames, exr_motion, frame, options
from .stylize.v1 import stylize_pb2 as pb

__all__ = [
    "Client", "StylizeError", "options", "pb", "SERVICE_CONFIG",
    "frame", "blender_frames", "exr_motion", "IN_CONTENT",
]

#: The retry policy as a gRPC service config, for clients in other languages
#: (`grpc.service_config` channel option, or the language's equivalent).
SERVICE_CONFIG = (
    __import__("importlib.resources").resources.files(__name__) / "service_config.json"
).read_text()
