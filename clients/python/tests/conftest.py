"""A live `stylize serve` for the client's tests: the binary from $STYLIZE_BIN (default the
repository's release build), its models from $STYLIZE_MODELS_DIR. The repository (assets and
the shared shot) is $STYLIZE_REPO, so the tests can run from a copy outside it, against the
package as installed."""
import os
import pathlib
import socket
import subprocess

import pytest

ROOT = pathlib.Path(os.environ.get("STYLIZE_REPO") or pathlib.Path(__file__).resolve().parents[3])
ASSETS = ROOT / "assets"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *flags):
        binary = os.environ.get("STYLIZE_BIN", str(ROOT / "target" / "release" / "stylize"))
        env = dict(os.environ)
        env.setdefault("STYLIZE_MODELS_DIR", str(ROOT / "models"))
        env["RUST_LOG"] = "stylize=warn"
        self.process = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--no-metrics", *flags],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        line = self.process.stdout.readline().strip()
        assert line.startswith("listening on "), line
        self.target = line.removeprefix("listening on ")

    def stop(self):
        self.process.kill()
        self.process.wait()


@pytest.fixture
def serve():
    started = []

    def start(*flags):
        server = Server(*flags)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def images():
    return {
        "content": (ASSETS / "chelsea.png").read_bytes(),
        "style": (ASSETS / "starry_night.jpg").read_bytes(),
    }
