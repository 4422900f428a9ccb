"""Generates the gRPC stubs from the server's contract (../../proto) whenever the package is
built, so they always match the proto they are installed beside."""
import pathlib

from setuptools import setup

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
PACKAGE = HERE / "src" / "stylize_client"


def generate_stubs():
    """Runs before setuptools looks at the packages (egg_info checks they exist)."""
    import grpc_tools
    from grpc_tools import protoc

    proto = PROTO_ROOT / "stylize" / "v1" / "stylize.proto"
    if not proto.exists():
        raise SystemExit(f"stylize-client: {proto} is missing; build from a stylize checkout")
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main([
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={PACKAGE}",
        f"--grpc_python_out={PACKAGE}",
        str(proto),
    ])
    if code != 0:
        raise SystemExit(f"stylize-client: protoc failed on {proto}")
    generated = PACKAGE / "stylize" / "v1"
    # The stubs import their messages as a top-level package; inside ours, relatively.
    stubs = generated / "stylize_pb2_grpc.py"
    stubs.write_text(
        stubs.read_text().replace("from stylize.v1 import stylize_pb2", "from . import stylize_pb2")
    )
    for package in (generated.parent, generated):
        (package / "__init__.py").touch()


generate_stubs()
setup()
