"""stylize_client against a live server: a still's events and result, registered styles,
field-naming errors, retries with backoff, deadlines and tokens, and a Blender shot."""
import threading
import time

import grpc
import pytest

from stylize_client import IN_CONTENT, SERVICE_CONFIG, Client, StylizeError, blender_frames, frame, pb

from conftest import ROOT

SMALL = dict(size=32, iterations=2, optimizer=pb.OPTIMIZER_ADAM)


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
        events = list(client.stylize(images["content"], [key], **SMALL))
        assert events[-1].HasField("result")


def test_errors_name_the_field_and_are_not_retried(serve, images):
    server = serve()
    with Client(server.target, retries=3, backoff=0.01) as client:
        with pytest.raises(StylizeError) as raised:
            list(client.stylize(images["content"], [images["style"]], size=8))
        assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "options.size" in raised.value.message
        assert raised.value.attempts == 1
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
        assert time.monotonic() - started >= 0.05 + 0.1
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
