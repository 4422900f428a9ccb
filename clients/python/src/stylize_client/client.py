"""The client proper: one channel, the service's calls, retries decided by the server's error
details, deadlines, the style-affinity routing header, and shots written to files by frame
number, resumable and split into chunks."""

import hashlib
import os
import random
import re
import time
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import grpc

from .details import ErrorDetails, details_of
from .frames import IN_CONTENT, blender_frames, frame_path
from .stylize.v1 import stylize_pb2 as pb
from .stylize.v1 import stylize_pb2_grpc as pb_grpc

#: The codes the server answers for work that did not run and may be sent again, when its
#: status carries no details (the details' RetryInfo decides otherwise).
RETRYABLE = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)

#: The header a load balancer hashes to send requests sharing a style to one replica.
STYLE_KEY_HEADER = "x-stylize-style-key"

#: The longest wait between two attempts, in seconds.
MAX_BACKOFF = 30.0

_QUALITY = {
    "draft": pb.QUALITY_DRAFT,
    "standard": pb.QUALITY_STANDARD,
    "final": pb.QUALITY_FINAL,
}

_FORMATS = {
    ".png": pb.IMAGE_FORMAT_PNG,
    ".jpg": pb.IMAGE_FORMAT_JPEG,
    ".jpeg": pb.IMAGE_FORMAT_JPEG,
    ".exr": pb.IMAGE_FORMAT_EXR,
}

Metadata = Sequence[Tuple[str, Union[str, bytes]]]


class StylizeError(Exception):
    """A call that failed: the gRPC status code, the server's message (naming the field for
    INVALID_ARGUMENT), how many attempts were made, and the standard error details: `reason`
    (QUEUE_FULL, DRAINING, EXCEEDS_MEMORY, ...), `retry_delay` (seconds; set when the work may
    be sent again) and `field_violations` ((field, description) pairs)."""

    def __init__(self, code: grpc.StatusCode, message: str, attempts: int,
                 details: Optional[ErrorDetails] = None):
        super().__init__(f"{code.name}: {message}")
        details = details or ErrorDetails()
        self.code = code
        self.message = message
        self.attempts = attempts
        self.reason = details.reason
        self.retry_delay = details.retry_delay
        self.field_violations = details.field_violations

    @classmethod
    def of(cls, error: grpc.RpcError, attempts: int) -> "StylizeError":
        return cls(error.code(), error.details() or "", attempts, details_of(error))

    @property
    def retryable(self) -> bool:
        """Whether the same work may succeed if sent again: the server says so (RetryInfo),
        the replica was unavailable, or (from a server without details) the queue was full."""
        if self.retry_delay is not None or self.code == grpc.StatusCode.UNAVAILABLE:
            return True
        return self.code in RETRYABLE and self.reason is None


def options(quality: Optional[str] = None, **fields) -> pb.Options:
    """`Options` from keyword arguments named as in the proto (`size=256, iterations=60`),
    with `quality` as a name (`draft`, `standard`, `final`)."""
    if quality is not None:
        if quality not in _QUALITY:
            raise ValueError(f"quality: {quality!r} is not one of {sorted(_QUALITY)}")
        fields["quality"] = _QUALITY[quality]
    return pb.Options(**fields)


def format_for(path: Union[str, Path]) -> int:
    """The `ImageFormat` a file's extension asks for (.png, .jpg/.jpeg, .exr)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(f"{str(path)!r}: the extension is not one of {sorted(_FORMATS)}")
    return _FORMATS[suffix]


def named(name: str) -> pb.StyleInput:
    """A registered style by its name (`register_style(..., name=...)`), for `styles`."""
    return pb.StyleInput(name=name)


def _style(style: Union[bytes, str, Path, pb.StyleInput]) -> pb.StyleInput:
    """A style as image bytes, a file path, a key from `register_style` (64 hex digits), or a
    `StyleInput` as it is (`named(...)`)."""
    if isinstance(style, pb.StyleInput):
        return style
    if isinstance(style, bytes):
        return pb.StyleInput(image=style)
    text = str(style)
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text) and not Path(text).exists():
        return pb.StyleInput(key=text)
    return pb.StyleInput(image=Path(text).read_bytes())


def routing_key(styles: Sequence[pb.StyleInput]) -> Optional[str]:
    """The style-affinity key: the first style's registered key, or the hex sha256 of its
    image bytes (the key RegisterStyle would give them). None for a name: the client asks
    the server for the key the name points at (`Client.get_style`)."""
    if not styles:
        return None
    first = styles[0]
    source = first.WhichOneof("source")
    if source == "name":
        return None
    return first.key if source == "key" else hashlib.sha256(first.image).hexdigest()


def write_whole(path: Union[str, Path], data: bytes):
    """Writes `data` beside `path`, then renames it into place: a file under its final name
    is always whole, which resuming trusts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial{path.suffix}")
    partial.write_bytes(data)
    os.replace(partial, path)


_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def trace_context() -> List[Tuple[str, str]]:
    """The caller's W3C trace context as metadata pairs, so the server's spans join the
    caller's trace: the active OpenTelemetry span's when the `opentelemetry` package is
    installed and one is active, else $TRACEPARENT (as a farm task or a script sets it). A
    malformed value is not sent."""
    try:
        from opentelemetry import propagate  # optional
        carrier: dict = {}
        propagate.inject(carrier)
        if "traceparent" in carrier:
            return sorted(carrier.items())
    except ImportError:
        pass
    given = os.environ.get("TRACEPARENT", "").strip()
    match = _TRACEPARENT.fullmatch(given)
    if match is None or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        return []
    return [("traceparent", given)]


def _token_from_environment() -> Optional[str]:
    for variable in ("STYLIZE_TOKEN_FILE", "STYLIZE_AUTH_TOKEN_FILE"):
        path = os.environ.get(variable)
        if path:
            return Path(path).read_text().strip()
    return None


class Client:
    """A connection to one stylize server (or a balancer in front of several).

    target: `host:port`, `http://host:port` or `https://host:port` (TLS); default
    $STYLIZE_SERVER, else localhost:50051. token: the bearer token the server requires
    (default: the file $STYLIZE_TOKEN_FILE, or $STYLIZE_AUTH_TOKEN_FILE, names).
    root_certificates: PEM bytes of the CA that signed the server's TLS certificate (TLS is
    used when given). metadata: pairs sent with every call. retries: how many times a
    retryable failure is sent again. backoff: the first wait in seconds, doubled each retry
    (at most 30 s), scaled by a random factor in [0.5, 1], and never shorter than the
    server's RetryInfo delay."""

    def __init__(
        self,
        target: Optional[str] = None,
        *,
        token: Optional[str] = None,
        root_certificates: Optional[bytes] = None,
        metadata: Metadata = (),
        retries: int = 3,
        backoff: float = 1.0,
    ):
        target = target or os.environ.get("STYLIZE_SERVER") or "localhost:50051"
        secure = root_certificates is not None or target.startswith("https://")
        for scheme in ("https://", "http://"):
            target = target.removeprefix(scheme)
        limits = [
            ("grpc.max_receive_message_length", 256 << 20),
            ("grpc.max_send_message_length", 256 << 20),
            # Retries are this client's own (below), not the channel's as well.
            ("grpc.enable_retries", 0),
        ]
        if secure:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(target, credentials, options=limits)
        else:
            self._channel = grpc.insecure_channel(target, options=limits)
        self.target = target
        self._stub = pb_grpc.StylizerStub(self._channel)
        token = token if token is not None else _token_from_environment()
        self._metadata = list(metadata) + ([("authorization", f"Bearer {token}")] if token else [])
        self.retries = retries
        self.backoff = backoff

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call_metadata(self, styles: Sequence[pb.StyleInput], metadata: Metadata) -> list:
        pairs = self._metadata + trace_context() + list(metadata)
        key = routing_key(styles)
        if key is None and styles and styles[0].WhichOneof("source") == "name":
            # Routed like the key the name points at now.
            key = self.get_style(styles[0].name).key
        if key is not None:
            pairs.append((STYLE_KEY_HEADER, key))
        return pairs

    def _wait(self, attempt: int, error: StylizeError, deadline: Optional[float]) -> bool:
        """Sleeps before attempt `attempt + 1` after `error`; False when no retry is left."""
        if not error.retryable or attempt > self.retries:
            return False
        pause = min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF) * random.uniform(0.5, 1.0)
        pause = max(pause, min(error.retry_delay or 0.0, MAX_BACKOFF))
        if deadline is not None and time.monotonic() + pause >= deadline:
            return False
        time.sleep(pause)
        return True

    @staticmethod
    def _left(deadline: Optional[float]) -> Optional[float]:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def stylize(
        self,
        content: Union[bytes, str, Path],
        styles: Sequence[Union[bytes, str, Path]],
        *,
        blend: Iterable[float] = (),
        request_id: str = "",
        timeout: Optional[float] = None,
        metadata: Metadata = (),
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
        pairs = self._call_metadata(request.styles, metadata)
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                for event in self._stub.Stylize(request, timeout=self._left(deadline), metadata=pairs):
                    yield event
                    if event.HasField("result"):
                        return
                raise StylizeError(grpc.StatusCode.INTERNAL, "the stream ended without a result", attempt)
            except grpc.RpcError as error:
                failed = StylizeError.of(error, attempt)
                if not self._wait(attempt, failed, deadline):
                    raise failed from None

    def stylize_to_file(self, content, styles, out: Union[str, Path], **kwargs) -> pb.Result:
        """`stylize`, writing the result's image to `out` (whole, then renamed) in the format its
        extension names (.png, .jpg, .exr; `png16=True` for 16-bit PNG); returns the `Result`."""
        if "output_format" not in kwargs:
            wanted = format_for(out)
            if kwargs.pop("png16", False) and wanted == pb.IMAGE_FORMAT_PNG:
                wanted = pb.IMAGE_FORMAT_PNG16
            kwargs["output_format"] = wanted
        for event in self.stylize(content, styles, **kwargs):
            if event.HasField("result"):
                write_whole(out, event.result.image)
                return event.result
        raise StylizeError(grpc.StatusCode.INTERNAL, "no result", 0)

    @staticmethod
    def _setup(styles, blend, request_id, temporal_weight, later_iterations,
               no_consistency_check, display_referred, previous, option_fields) -> pb.SequenceSetup:
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
        if previous is not None:
            setup.previous.CopyFrom(previous)
        return setup

    def stylize_sequence(
        self,
        frames: Iterable[pb.SequenceFrame],
        styles: Sequence[Union[bytes, str, Path]],
        *,
        blend: Iterable[float] = (),
        request_id: str = "",
        timeout: Optional[float] = None,
        metadata: Metadata = (),
        temporal_weight: Optional[float] = None,
        later_iterations: int = 0,
        no_consistency_check: bool = False,
        display_referred: bool = False,
        previous: Optional[pb.PreviousFrame] = None,
        **option_fields,
    ) -> Iterator[pb.StylizeSequenceResponse]:
        """Stylises a shot (frames from `frame(...)` or `blender_frames(...)`, read as the server
        takes them) and yields its events, each tagged with its frame index and number; a
        frame's `result` (image, held fraction, warping error) comes as soon as that frame is
        done. `previous`: the frame delivered just before the first (a chunk of a shot), which
        the chain continues from. The sequence options are keyword arguments; the others are
        the still's `Options`. A shot is stateful, so only a failure before any event is
        retried, and only when `frames` can be iterated again (a list); `stylize_shot`
        resumes instead. Raises StylizeError on failure (naming `frames[i].field`)."""
        setup = self._setup(styles, blend, request_id, temporal_weight, later_iterations,
                            no_consistency_check, display_referred, previous, option_fields)
        pairs = self._call_metadata(setup.styles, metadata)
        replayable = isinstance(frames, (list, tuple))

        def messages():
            yield pb.StylizeSequenceRequest(setup=setup)
            for f in frames:
                yield pb.StylizeSequenceRequest(frame=f)

        deadline = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            received = False
            try:
                for event in self._stub.StylizeSequence(messages(), timeout=self._left(deadline),
                                                        metadata=pairs):
                    received = True
                    yield event
                return
            except grpc.RpcError as error:
                failed = StylizeError.of(error, attempt)
                if received or not replayable or not self._wait(attempt, failed, deadline):
                    raise failed from None

    def stylize_shot(
        self,
        frames: Union[str, Path],
        numbers: Iterable[int],
        out: Union[str, Path],
        styles: Sequence[Union[bytes, str, Path]],
        *,
        continue_from: Union[str, Path, None] = None,
        timeout: Optional[float] = None,
        **kwargs,
    ) -> List[int]:
        """Renders frames `numbers` (consecutive, e.g. `range(1001, 1101)`) of a shot rendered as
        multilayer OpenEXR with its Vector pass (`frames`: a pattern such as
        `shot/frame_####.exr`) into the pattern `out`, each frame written whole under its own
        number as it arrives (format from the extension). Frames already written are kept:
        the shot resumes after the last of them, continuing the chain from it; a chunk that
        starts after the shot's first frame continues from the frame before it, read from
        `out` (or `continue_from`). A retryable failure, even mid-shot, resumes the same way
        while retries and `timeout` last. Returns the numbers written by this call; raises
        StylizeError, or FileNotFoundError for a missing frame or chunk before this one."""
        numbers = list(numbers)
        if any(b != a + 1 for a, b in zip(numbers, numbers[1:])):
            raise ValueError(f"numbers: {numbers} are not consecutive")
        for number in numbers:
            if not frame_path(frames, number).is_file():
                raise FileNotFoundError(f"frame {number} is missing: {frame_path(frames, number)}")
        kwargs.setdefault("output_format", format_for(frame_path(out, numbers[0])))
        deadline = None if timeout is None else time.monotonic() + timeout
        written: List[int] = []
        attempt = 0
        while True:
            attempt += 1
            done = next((i for i, n in enumerate(numbers) if not frame_path(out, n).is_file()),
                        len(numbers))
            if done == len(numbers):
                return written
            previous = self._previous(frames, out, numbers, done, continue_from)
            paths = [frame_path(frames, n) for n in numbers[done:]]
            try:
                for event in self.stylize_sequence(
                        blender_frames(paths, continues=previous is not None), styles,
                        previous=previous, timeout=self._left(deadline), **kwargs):
                    if event.HasField("result"):
                        write_whole(frame_path(out, event.number), event.result.result.image)
                        written.append(event.number)
                return written
            except StylizeError as failed:
                failed.attempts = attempt
                if not self._wait(attempt, failed, deadline):
                    raise

    @staticmethod
    def _previous(frames, out, numbers, done, continue_from) -> Optional[pb.PreviousFrame]:
        """The frame the chain continues from when `done` frames of `numbers` are written."""
        if done > 0:
            image, number = frame_path(out, numbers[done - 1]), numbers[done - 1]
        else:
            number = numbers[0] - 1
            if continue_from is not None:
                image = Path(continue_from)
            elif number >= 0 and frame_path(frames, number).is_file():
                image = frame_path(out, number)
                if not image.is_file():
                    raise FileNotFoundError(
                        f"{image} is missing: frame {numbers[0]} continues the chain from frame "
                        f"{number}; render the frames before first, or pass continue_from")
            else:
                return None
        previous = pb.PreviousFrame(image=image.read_bytes(), number=number)
        source = frame_path(frames, number) if number >= 0 else None
        if source is not None and source.is_file():
            # Its own file's Vector pass holds its motion to the next frame.
            previous.motion_to_next.exr.file = source.read_bytes()
        return previous

    def register_style(
        self,
        image: Union[bytes, str, Path],
        *,
        size: int = 512,
        name: str = "",
        labels: Optional[dict] = None,
        replace: bool = False,
        timeout: Optional[float] = None,
        metadata: Metadata = (),
        **fields,
    ) -> str:
        """Precomputes a style on the server; returns the key later requests may send. With
        `name` (for example "vangogh/starry-night@v2", with `labels`), requests may send
        `named(name)` instead; a name pointing at another style is refused (ALREADY_EXISTS)
        unless `replace`."""
        if not isinstance(image, bytes):
            image = Path(image).read_bytes()
        request = pb.RegisterStyleRequest(image=image, size=size, name=name, labels=labels or {},
                                          replace=replace, **fields)
        pairs = self._call_metadata([pb.StyleInput(image=image)], metadata)
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._stub.RegisterStyle(request, timeout=self._left(deadline),
                                                metadata=pairs).key
            except grpc.RpcError as error:
                failed = StylizeError.of(error, attempt)
                if not self._wait(attempt, failed, deadline):
                    raise failed from None

    def get_style(self, name: Optional[str] = None, *, key: Optional[str] = None,
                  timeout: Optional[float] = 10.0, metadata: Metadata = ()) -> pb.StyleInfo:
        """One registered style by name (or by `key`): key, labels, size, registration and
        last-use times, the targets the answering replica holds. NOT_FOUND if not registered."""
        if (name is None) == (key is None):
            raise ValueError("get_style: give a name or a key")
        request = pb.GetStyleRequest(name=name) if name is not None else pb.GetStyleRequest(key=key)
        try:
            return self._stub.GetStyle(request, timeout=timeout,
                                       metadata=self._call_metadata([], metadata)).style
        except grpc.RpcError as error:
            raise StylizeError.of(error, 1) from None

    def list_styles(self, prefix: str = "", *, labels: Optional[dict] = None, page_size: int = 100,
                    timeout: Optional[float] = 10.0, metadata: Metadata = ()) -> Iterator[pb.StyleInfo]:
        """Every named style starting with `prefix` and carrying all of `labels`, sorted by
        name, fetched a page at a time."""
        token = ""
        while True:
            request = pb.ListStylesRequest(page_size=page_size, page_token=token,
                                           name_prefix=prefix, labels=labels or {})
            try:
                page = self._stub.ListStyles(request, timeout=timeout,
                                             metadata=self._call_metadata([], metadata))
            except grpc.RpcError as error:
                raise StylizeError.of(error, 1) from None
            yield from page.styles
            if not page.next_page_token:
                return
            token = page.next_page_token

    def server_info(self, *, timeout: Optional[float] = 10.0,
                    metadata: Metadata = ()) -> pb.ServerInfoResponse:
        """What the server is: version, commit, engine, device, memory budget, limits, presets
        and registry kind."""
        pairs = self._call_metadata([], metadata)
        try:
            return self._stub.ServerInfo(pb.ServerInfoRequest(), timeout=timeout, metadata=pairs)
        except grpc.RpcError as error:
            raise StylizeError.of(error, 1) from None


__all__ = ["Client", "StylizeError", "options", "format_for", "routing_key", "write_whole",
           "named", "trace_context", "IN_CONTENT", "STYLE_KEY_HEADER"]
