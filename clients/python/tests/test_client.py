"""stylize_client against a live server: a still's events and result, registered styles,
field-naming errors with their standard details, retries decided by them, deadlines and
tokens, the environment, the routing header and extra metadata, output formats by extension,
a Blender shot, and a shot rendered to files by frame number in chunks that resume."""
import hashlib
import os
import subprocess
import threading
import time
from concurrent import futures

import grpc
import pytest

from stylize_client import (IN_CONTENT, SERVICE_CONFIG, STYLE_KEY_HEADER, Client, StylizeError,
                            blender_frames, frame, frame_path, named, pb)

from conftest import ASSETS, ROOT

SMALL = dict(size=32, iterations=2, optimizer=pb.OPTIMIZER_ADAM)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_still_streams_its_events_and_writes_its_result(serve, images, tmp_path):
    server = serve("--workers", "1")
    with Client(server.target) as client:
        kinds = [e.WhichOneof("event") for e in client.stylize(images["content"], [images["style"]], **SMALL)]
        assert kinds[0] == "queued" and kinds[1] == "started" and kinds[-1] == "result"
        assert kinds.count("progress") == 2
        out = tmp_path / "out.png"
        result = client.stylize_to_file(images["content"], [images["style"]], out, **SMALL)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (result.width, result.height) == (32, 21)
        # The style's targets were computed by the first request.
        assert list(result.style_cache) == [pb.CACHE_LOOKUP_HIT]


def test_registered_styles_are_used_by_key(serve, images):
    server = serve()
    with Client(server.target) as client:
        key = client.register_style(images["style"], size=32)
        assert len(key) == 64
        info = client.server_info()
        assert info.engine == "onnxruntime-cpu" and info.registry == "local"
        assert [p.name for p in info.presets] == ["draft", "standard", "final"]
        assert info.limits.max_styles > 0 and info.version
        events = list(client.stylize(images["content"], [key], **SMALL))
        assert events[-1].HasField("result")


def test_styles_by_name_are_listed_used_and_re_pointed(serve, images):
    server = serve()
    look = "vangogh/starry-night@v2"
    with Client(server.target) as client:
        key = client.register_style(images["style"], size=32, name=look, labels={"team": "lookdev"})
        style = client.get_style(look)
        assert style.key == key and dict(style.labels) == {"team": "lookdev"}
        assert style.file_bytes == len(images["style"]) and style.registered_at.seconds > 0
        assert [t.longest_side for t in style.cached_targets] == [32]
        assert client.get_style(key=key).name == ""
        events = list(client.stylize(images["content"], [named(look)], **SMALL))
        assert events[-1].HasField("result")
        assert client.get_style(look).last_used_at.seconds > 0
        # Another style under the name: refused naming the field, unless replaced.
        with pytest.raises(StylizeError) as raised:
            client.register_style(images["content"], size=32, name=look)
        assert raised.value.code == grpc.StatusCode.ALREADY_EXISTS
        assert raised.value.reason == "NAME_TAKEN" and "name" in raised.value.message
        moved = client.register_style(images["content"], size=32, name=look, replace=True)
        assert client.get_style(look).key == moved != key
        client.register_style(images["style"], size=32, name="monet/water-lilies", labels={"team": "comp"})
        assert [s.name for s in client.list_styles(page_size=1)] == ["monet/water-lilies", look]
        assert [s.name for s in client.list_styles(labels={"team": "comp"})] == ["monet/water-lilies"]
        assert [s.key for s in client.list_styles("vangogh/")] == [moved]
        with pytest.raises(StylizeError) as raised:
            client.get_style("nobody")
        assert raised.value.code == grpc.StatusCode.NOT_FOUND


def test_errors_name_the_field_and_are_not_retried(serve, images):
    server = serve()
    with Client(server.target, retries=3, backoff=0.01) as client:
        with pytest.raises(StylizeError) as raised:
            list(client.stylize(images["content"], [images["style"]], size=8))
        assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "options.size" in raised.value.message
        assert raised.value.attempts == 1
        # The standard details: the reason and the field a program acts on.
        assert raised.value.reason == "INVALID_ARGUMENT"
        assert [f for f, _ in raised.value.field_violations] == ["options.size"]
        assert raised.value.retry_delay is None and not raised.value.retryable
        with pytest.raises(ValueError):
            list(client.stylize(images["content"], [images["style"]], quality="best"))


def test_a_full_queue_is_retried_with_backoff_until_a_place_frees(serve, images):
    server = serve("--workers", "1", "--max-queue", "1")
    busy = Client(server.target)
    long_job = busy.stylize(images["content"], [images["style"]], size=32, iterations=10_000,
                            optimizer=pb.OPTIMIZER_ADAM)
    next(e for e in long_job if e.HasField("progress"))
    queued = busy.stylize(images["content"], [images["style"]], **SMALL)
    next(queued)  # queued behind it: the queue is full now
    with Client(server.target, retries=2, backoff=0.05) as client:
        started = time.monotonic()
        with pytest.raises(StylizeError) as raised:
            list(client.stylize(images["content"], [images["style"]], **SMALL))
        assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert raised.value.attempts == 3
        # The server's RetryInfo (1 s for a full queue) sets the shortest wait.
        assert raised.value.reason == "QUEUE_FULL" and raised.value.retry_delay == 1.0
        assert time.monotonic() - started >= 2 * 1.0
        # With the long job cancelled, a retried request gets through.
        threading.Timer(0.3, long_job.close).start()
        patient = Client(server.target, retries=6, backoff=0.2)
        events = list(patient.stylize(images["content"], [images["style"]], **SMALL))
        assert events[-1].HasField("result")
    busy.close()


def test_deadlines_and_tokens(serve, images, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    server = serve("--auth-token-file", str(token_file))
    with Client(server.target) as anonymous:
        with pytest.raises(StylizeError) as raised:
            list(anonymous.stylize(images["content"], [images["style"]], **SMALL))
        assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
    with Client(server.target, token="s3cret") as client:
        assert list(client.stylize(images["content"], [images["style"]], **SMALL))[-1].HasField("result")
        with pytest.raises(StylizeError) as raised:
            list(client.stylize(images["content"], [images["style"]], size=64, iterations=10_000,
                                optimizer=pb.OPTIMIZER_ADAM, timeout=1.0))
        assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_only_a_well_formed_trace_context_is_sent(monkeypatch):
    from stylize_client import trace_context
    monkeypatch.setenv("TRACEPARENT", TRACEPARENT)
    assert trace_context() == [("traceparent", TRACEPARENT)]
    for bad in ("", "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", TRACEPARENT[:-3]):
        monkeypatch.setenv("TRACEPARENT", bad)
        assert trace_context() == [], bad


def test_the_service_config_names_the_retryable_codes():
    import json
    policy = json.loads(SERVICE_CONFIG)["methodConfig"][0]["retryPolicy"]
    assert set(policy["retryableStatusCodes"]) == {"UNAVAILABLE", "RESOURCE_EXHAUSTED"}


SHOT = [ROOT / "../shared/sequences/rolling-ball" / f"frame_{t:04}.exr" for t in (1, 2, 3)]


def test_a_blender_shot_streams_each_frame_with_its_motion_read_from_the_frame(serve, images):
    # Each frame's file (800 KB) travels once: the server reads the beauty and Vector passes
    # from it; a 1 MB message limit leaves no room for the motion as offsets beside it.
    server = serve("--workers", "1", "--max-message-bytes", "1000000")
    with Client(server.target) as client:
        events = list(client.stylize_sequence(blender_frames(SHOT), [images["style"]], size=32,
                                              iterations=2, later_iterations=1, scales=1))
    results = [(e.frame, e.result) for e in events if e.HasField("result")]
    assert [index for index, _ in results] == [0, 1, 2]
    # Frames keep the numbers in their file names.
    assert [e.number for e in events if e.HasField("result")] == [1, 2, 3]
    for index, result in results:
        assert (result.result.width, result.result.height) == (32, 18)
        if index:
            assert result.held_fraction > 0.5 and result.HasField("warping_error")
    # Progress comes frame by frame, in order.
    frames_seen = [e.frame for e in events]
    assert frames_seen == sorted(frames_seen)


def test_a_bad_frame_is_named(serve, images):
    server = serve("--workers", "1")
    png = ROOT / "../shared/sequences/rolling-ball/frame_0002.png"
    shot = [frame(SHOT[0], motion_to_next=IN_CONTENT), frame(png, motion_to_previous=IN_CONTENT)]
    with Client(server.target, retries=2, backoff=0.01) as client:
        with pytest.raises(StylizeError) as raised:
            list(client.stylize_sequence(shot, [images["style"]], size=32, iterations=1, scales=1))
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "frames[1].motion_to_previous" in raised.value.message
    assert raised.value.attempts == 1


class Recorder(grpc.GenericRpcHandler):
    """A stand-in server that records each call's metadata and refuses it."""

    def __init__(self):
        self.calls = []

    def service(self, details):
        self.calls.append(dict(details.invocation_metadata))

        def refuse(request, context):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "recorded")

        if details.method.endswith("StylizeSequence"):
            return grpc.stream_stream_rpc_method_handler(refuse)
        return grpc.unary_stream_rpc_method_handler(refuse)


def test_the_cli_sends_the_routing_header_too(images, tmp_path):
    """`stylize submit` and `submit-sequence` set the same style-affinity header."""
    recorder = Recorder()
    fake = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[recorder])
    port = fake.add_insecure_port("127.0.0.1:0")
    fake.start()
    style = tmp_path / "style.jpg"
    style.write_bytes(images["style"])
    binary = os.environ.get("STYLIZE_BIN", str(ROOT / "target" / "release" / "stylize"))
    common = ["--server", f"http://127.0.0.1:{port}", "--style", str(style), "--retries", "0",
              "--size", "32", "--progress", "none"]
    frames = str(ROOT / "../shared/sequences/rolling-ball/frame_####.exr")
    try:
        for args in (["submit", "--content", str(ASSETS / "chelsea.png"),
                      "--out", str(tmp_path / "o.png")],
                     ["submit-sequence", "--frames", frames, "--frame-range", "1",
                      "--out", str(tmp_path / "s_####.png")]):
            run = subprocess.run([binary, *args, *common], capture_output=True, text=True,
                                 env={**os.environ, "TRACEPARENT": TRACEPARENT})
            assert run.returncode == 65 and "recorded" in run.stderr, run.stderr
    finally:
        fake.stop(0)
    key = hashlib.sha256(images["style"]).hexdigest()
    assert [call.get(STYLE_KEY_HEADER) for call in recorder.calls] == [key, key]
    assert [call.get("traceparent") for call in recorder.calls] == [TRACEPARENT, TRACEPARENT]


def test_the_environment_the_routing_header_and_metadata(images, tmp_path, monkeypatch):
    recorder = Recorder()
    fake = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[recorder])
    port = fake.add_insecure_port("127.0.0.1:0")
    fake.start()
    try:
        token_file = tmp_path / "token"
        token_file.write_text("from-the-environment\n")
        monkeypatch.setenv("STYLIZE_SERVER", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("STYLIZE_TOKEN_FILE", str(token_file))
        monkeypatch.setenv("TRACEPARENT", TRACEPARENT)
        with Client(metadata=[("x-farm-job", "shot-42")]) as client:
            with pytest.raises(StylizeError):
                list(client.stylize(images["content"], [images["style"]], **SMALL,
                                    metadata=[("x-farm-task", "7")]))
            with pytest.raises(StylizeError):
                list(client.stylize(images["content"], ["ab" * 32], **SMALL))
    finally:
        fake.stop(0)
    by_image, by_key = recorder.calls
    assert by_image[STYLE_KEY_HEADER] == hashlib.sha256(images["style"]).hexdigest()
    assert by_key[STYLE_KEY_HEADER] == "ab" * 32
    assert by_image["authorization"] == "Bearer from-the-environment"
    # The caller's trace context goes with every call.
    assert by_image["traceparent"] == by_key["traceparent"] == TRACEPARENT
    assert by_image["x-farm-job"] == "shot-42" and by_image["x-farm-task"] == "7"
    assert "x-farm-task" not in by_key


def test_the_output_format_follows_the_extension(serve, images, tmp_path):
    server = serve("--workers", "1")
    magic = {"out.exr": b"\x76\x2f\x31\x01", "out.jpg": b"\xff\xd8\xff", "out.png": b"\x89PNG"}
    with Client(server.target) as client:
        for name, start in magic.items():
            client.stylize_to_file(images["content"], [images["style"]], tmp_path / name, **SMALL)
            assert (tmp_path / name).read_bytes().startswith(start), name
        with pytest.raises(ValueError):
            client.stylize_to_file(images["content"], [images["style"]], tmp_path / "out.tiff", **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(magic)


def test_a_shot_renders_by_frame_number_in_chunks_that_resume(serve, images, tmp_path):
    server = serve("--workers", "1")
    frames = str(ROOT / "../shared/sequences/rolling-ball/frame_####.exr")
    shot = dict(size=32, iterations=2, later_iterations=1, scales=1)
    with Client(server.target) as client:
        assert client.stylize_shot(frames, range(1, 5), tmp_path / "whole_$F4.png",
                                   [images["style"]], **shot) == [1, 2, 3, 4]
        # Two chunks: the second continues the chain from the first's last frame on disk.
        chunked = tmp_path / "chunk_%04d.png"
        assert client.stylize_shot(frames, [1, 2], chunked, [images["style"]], **shot) == [1, 2]
        assert client.stylize_shot(frames, [3, 4], chunked, [images["style"]], **shot) == [3, 4]
        for number in range(1, 5):
            whole = frame_path(tmp_path / "whole_$F4.png", number).read_bytes()
            assert frame_path(chunked, number).read_bytes() == whole, number
        # A rerun resumes after the last frame written; a chunk whose predecessor is missing
        # is refused before any work.
        frame_path(chunked, 4).unlink()
        assert client.stylize_shot(frames, range(1, 5), chunked, [images["style"]], **shot) == [4]
        assert client.stylize_shot(frames, range(1, 5), chunked, [images["style"]], **shot) == []
        with pytest.raises(FileNotFoundError, match="orphan_0002.png"):
            client.stylize_shot(frames, [3], tmp_path / "orphan_####.png", [images["style"]], **shot)
    assert not list(tmp_path.glob("*partial*"))
