"""Generates the gRPC stubs from the server's contract whenever the package is built, so they
always match the proto they are installed beside. In a stylize checkout the proto is read from
../../proto and copied into proto/ here, which the sdist carries; building from the sdist (no
checkout) reads that copy. The proto also goes into the package, beside its stubs."""
import pathlib
import shutil

from setuptools import setup

HERE = pathlib.Path(__file__).resolve().parent
RELATIVE = pathlib.Path("stylize") / "v1" / "stylize.proto"
CHECKOUT_PROTO = HERE.parent.parent / "proto"
SDIST_PROTO = HERE / "proto"
PACKAGE = HERE / "src" / "stylize_client"


def proto_root() -> pathlib.Path:
    """The checkout's proto, copied beside setup.py for the sdist; else the sdist's copy."""
    if (CHECKOUT_PROTO / RELATIVE).exists():
        (SDIST_PROTO / RELATIVE).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CHECKOUT_PROTO / RELATIVE, SDIST_PROTO / RELATIVE)
    if not (SDIST_PROTO / RELATIVE).exists():
        raise SystemExit(f"stylize-client: {RELATIVE} is in neither {CHECKOUT_PROTO} nor {SDIST_PROTO}")
    return SDIST_PROTO


def generate_stubs():
    """Runs before setuptools looks at the packages (egg_info checks they exist)."""
    import grpc_tools
    from grpc_tools import protoc

    root = proto_root()
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main([
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{well_known}",
        f"--python_out={PACKAGE}",
        f"--grpc_python_out={PACKAGE}",
        str(root / RELATIVE),
    ])
    if code != 0:
        raise SystemExit(f"stylize-client: protoc failed on {root / RELATIVE}")
    generated = PACKAGE / "stylize" / "v1"
    # The stubs import their messages as a top-level package; inside ours, relatively.
    stubs = generated / "stylize_pb2_grpc.py"
    stubs.write_text(
        stubs.read_text().replace("from stylize.v1 import stylize_pb2", "from . import stylize_pb2")
    )
    shutil.copyfile(root / RELATIVE, generated / "stylize.proto")
    for package in (generated.parent, generated):
        (package / "__init__.py").touch()


generate_stubs()
setup()
