"""A Python client for the stylize server: submit a still or a shot (a sequence of frames with
their motion, numbered as the farm numbers them) and iterate its events, register styles,
name styles and list them, write results whole in the format their extension names, render shots in resumable chunks.
Retries with jittered backoff what the server's error details call retryable (a full queue,
a draining replica), honours an overall deadline, sets the style-affinity routing header, and
speaks TLS and bearer tokens ($STYLIZE_SERVER and $STYLIZE_TOKEN_FILE by default).

    from stylize_client import Client
    client = Client("localhost:50051")
    result = client.stylize_to_file("cat.png", ["starry.jpg"], "out.exr", size=256, quality="standard")
"""

from .client import (STYLE_KEY_HEADER, Client, StylizeError, format_for, named, options,
                     routing_key, trace_context, write_whole)
from .details import ErrorDetails
from .frames import IN_CONTENT, blender_frames, exr_motion, frame, frame_number, frame_path
from .stylize.v1 import stylize_pb2 as pb

__all__ = [
    "Client", "StylizeError", "ErrorDetails", "options", "pb", "SERVICE_CONFIG",
    "frame", "blender_frames", "exr_motion", "IN_CONTENT", "frame_path", "frame_number",
    "format_for", "routing_key", "write_whole", "STYLE_KEY_HEADER", "named", "trace_context",
]

#: The retry policy as a gRPC service config, for clients in other languages
#: (`grpc.service_config` channel option, or the language's equivalent).
SERVICE_CONFIG = (
    __import__("importlib.resources").resources.files(__name__) / "service_config.json"
).read_text()
