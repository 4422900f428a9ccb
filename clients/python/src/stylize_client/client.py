"""The client proper: one channel, two calls, retries and deadlines."""

import time
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import grpc

from .stylize.v1 import stylize_pb2 as pb
from .stylize.v1 import stylize_pb2_grpc as pb_grpc

#: The codes the server answers for work that did not run and may be sent again.
RETRYABLE = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)

_QUALITY = {
    "draft": pb.QUALITY_DRAFT,
    "standard": pb.QUALITY_STANDARD,
    "final": pb.QUALITY_FINAL,
}


class StylizeError(Exception):
    """A call that failed: the gRPC status code, the server's message (naming the field for
    INVALID_ARGUMENT) and how many attempts were made."""

    def __init__(self, code: grpc.StatusCode, message: str, attempts: int):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.attempts = attempts


def options(quality: Optional[str] = None, **fields) -> pb.Options:
    """`Options` from keyword arguments named as in the proto (`size=256, iterations=60`),
    with `quality` as a name (`draft`, `standard`, `final`)."""
    if quality is not None:
        if quality not in _QUALITY:
            raise ValueError(f"quality: {quality!r} is not one of {sorted(_QUALITY)}")
        fields["quality"] = _QUALITY[quality]
    return pb.Options(**fields)


def _style(style: Union[bytes, str, Path]) -> pb.StyleInput:
    """A style as image bytes, a file path, or a key from `register_style` (64 hex digits)."""
    if isinstance(style, bytes):
        return pb.StyleInput(image=style)
    text = str(style)
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text) and not Path(text).exists():
        return pb.StyleInput(key=text)
    return pb.StyleInput(image=Path(text).read_bytes())


#: A motion read by the server from the frame's own OpenEXR file: Blender's Vector pass
#: (to the previous frame: X, -Y; to the next: -Z, W). `exr_motion(x, y, ...)` names others.
IN_CONTENT = pb.Motion(exr=pb.ExrMotion())


def exr_motion(x_channel: str, y_channel: str, *, negate_x: bool = False, negate_y: bool = False,
               file: bytes = b"") -> pb.Motion:
    """Motion from two channels of an OpenEXR file (`part.channel` in multipart files); with no
    `file`, of the frame's own content, so a renderer's frame is sent once."""
    return pb.Motion(exr=pb.ExrMotion(file=file, x_channel=x_channel, y_channel=y_channel,
                                      negate_x=negate_x, negate_y=negate_y))


def _motion(motion) -> Optional[pb.Motion]:
    """A `pb.Motion` as it is, or a Middlebury `.flo` file (bytes or a path)."""
    if motion is None or isinstance(motion, pb.Motion):
        return motion
    data = motion if isinstance(motion, bytes) else Path(motion).read_bytes()
    return pb.Motion(flo=data)


def frame(content: Union[bytes, str, Path], *, motion_to_previous=None, motion_to_next=None,
          mask: Union[bytes, str, Path, None] = None) -> pb.SequenceFrame:
    """One frame of a shot: its image (PNG, JPEG or OpenEXR), its motion to the previous frame
    (required after the first) and optionally to the next (for the consistency check), each a
    `pb.Motion` (`IN_CONTENT`, `exr_motion(...)`) or a `.flo` file; `mask` a greyscale image,
    white where the previous frame holds."""
    if not isinstance(content, bytes):
        content = Path(content).read_bytes()
    if mask is not None and not isinstance(mask, bytes):
        mask = Path(mask).read_bytes()
    return pb.SequenceFrame(content=content, motion_to_previous=_motion(motion_to_previous),
                            motion_to_next=_motion(motion_to_next), mask=mask or b"")


def blender_frames(paths: Iterable[Union[str, Path]]) -> Iterator[pb.SequenceFrame]:
    """A shot Blender rendered as multilayer OpenEXR with its Vector pass, in order: each file
    is read as it is sent, once, with its motion read from it by the server."""
    for index, path in enumerate(paths):
        yield frame(path, motion_to_previous=IN_CONTENT if index else None,
                    motion_to_next=IN_CONTENT)


class Client:
    """A connection to one stylize server (or a balancer in front of several).

    target: `host:port`. token: the bearer token the server requires (`--auth-token-file`).
    root_certificates: PEM bytes of the CA that signed the server's TLS certificate (TLS is
    used when given). retries: how many times a retryable failure is sent again.
    backoff: the first wait in seconds, doubled each retry (capped at 16 s)."""

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        token: Optional[str] = None,
        root_certificates: Optional[bytes] = None,
        retries: int = 3,
        backoff: float = 1.0,
    ):
        limits = [
            ("grpc.max_receive_message_length", 256 << 20),
            ("grpc.max_send_message_length", 256 << 20),
            # Retries are this client's own (below), not the channel's as well.
            ("grpc.enable_retries", 0),
        ]
        if root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(target, credentials, options=limits)
        else:
            self._channel = grpc.insecure_channel(target, options=limits)
        self._stub = pb_grpc.StylizerStub(self._channel)
        self._metadata = [("authorization", f"Bearer {token}")] if token else []
        self.retries = retries
        self.backoff = backoff

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _attempts(self, deadline: Optional[float]):
        """Yields attempt numbers and the time each may take, sleeping between them."""
        wait = self.backoff
        for attempt in range(1, self.retries + 2):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            yield attempt, left
            pause = min(wait, 16.0)
            if left is not None:
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            wait *= 2

    def stylize(
        self,
        content: Union[bytes, str, Path],
        styles: Sequence[Union[bytes, str, Path]],
        *,
        blend: Iterable[float] = (),
        request_id: str = "",
        timeout: Optional[float] = None,
        **option_fields,
    ) -> Iterator[pb.StylizeEvent]:
        """Submits a still and yields its events (`queued`, `started`, `progress`, `preview`,
        then `result`). A retryable failure before the result is sent again, after a backoff,
        while retries and the overall `timeout` (seconds) last; events of a failed attempt
        may repeat. Raises StylizeError on failure."""
        if not isinstance(content, bytes):
            content = Path(content).read_bytes()
        request = pb.StylizeRequest(
            request_id=request_id,
            content=content,
            styles=[_style(s) for s in styles],
            blend=list(blend),
            options=options(**option_fields),
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        for attempt, left in self._attempts(deadline):
            try:
                for event in self._stub.Stylize(request, timeout=left, metadata=self._metadata):
                    yield event
                    if event.HasField("result"):
                        return
                raise StylizeError(grpc.StatusCode.INTERNAL, "the stream ended without a result", attempt)
            except grpc.RpcError as error:
                last = StylizeError(error.code(), error.details() or "", attempt)
                if error.code() not in RETRYABLE:
                    raise last from None
        raise last or StylizeError(grpc.StatusCode.DEADLINE_EXCEEDED, "no time left to retry", 0)

    def stylize_to_file(self, content, styles, out: Union[str, Path], **kwargs) -> pb.Result:
        """`stylize`, writing the result's image to `out`; returns the `Result`."""
        for event in self.stylize(content, styles, **kwargs):
            if event.HasField("result"):
                Path(out).write_bytes(event.result.image)
                return event.result
        raise StylizeError(grpc.StatusCode.INTERNAL, "no result", 0)

    def stylize_sequence(
        self,
        frames: Iterable[pb.SequenceFrame],
        styles: Sequence[Union[bytes, str, Path]],
        *,
        blend: Iterable[float] = (),
        request_id: str = "",
        timeout: Optional[float] = None,
        temporal_weight: Optional[float] = None,
        later_iterations: int = 0,
        no_consistency_check: bool = False,
        display_referred: bool = False,
        **option_fields,
    ) -> Iterator[pb.StylizeSequenceResponse]:
        """Stylises a shot (frames from `frame(...)` or `blender_frames(...)`, read as the server
        takes them) and yields its events, each tagged with its frame index; a frame's `result`
        (image, held fraction, warping error) comes as soon as that frame is done. The sequence
        options are keyword arguments; the others are the still's `Options`. A shot is stateful,
        so only a failure before any event is retried, and only when `frames` can be iterated
        again (a list). Raises StylizeError on failure (naming `frames[i].field`)."""
        setup = pb.SequenceSetup(
            request_id=request_id,
            styles=[_style(s) for s in styles],
            blend=list(blend),
            options=options(**option_fields),
            sequence=pb.SequenceOptions(
                later_iterations=later_iterations,
                no_consistency_check=no_consistency_check,
                display_referred=display_referred,
            ),
        )
        if temporal_weight is not None:
            setup.sequence.temporal_weight = temporal_weight
        replayable = isinstance(frames, (list, tuple))

        def messages():
            yield pb.StylizeSequenceRequest(setup=setup)
            for f in frames:
                yield pb.StylizeSequenceRequest(frame=f)

        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        for attempt, left in self._attempts(deadline):
            received = False
            try:
                for event in self._stub.StylizeSequence(messages(), timeout=left, metadata=self._metadata):
                    received = True
                    yield event
                return
            except grpc.RpcError as error:
                last = StylizeError(error.code(), error.details() or "", attempt)
                if error.code() not in RETRYABLE or received or not replayable:
                    raise last from None
        raise last or StylizeError(grpc.StatusCode.DEADLINE_EXCEEDED, "no time left to retry", 0)

    def register_style(
        self,
        image: Union[bytes, str, Path],
        *,
        size: int = 512,
        timeout: Optional[float] = None,
        **fields,
    ) -> str:
        """Precomputes a style on the server; returns the key later requests may send."""
        if not isinstance(image, bytes):
            image = Path(image).read_bytes()
        request = pb.RegisterStyleRequest(image=image, size=size, **fields)
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        for attempt, left in self._attempts(deadline):
            try:
                return self._stub.RegisterStyle(request, timeout=left, metadata=self._metadata).key
            except grpc.RpcError as error:
                last = StylizeError(error.code(), error.details() or "", attempt)
                if error.code() not in RETRYABLE:
                    raise last from None
        raise last or StylizeError(grpc.StatusCode.DEADLINE_EXCEEDED, "no time left to retry", 0)
