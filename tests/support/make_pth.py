"""Writes a zip-format torch checkpoint (as torch.save does) without torch installed.

Usage: make_pth.py MANIFEST.json OUT.pth
MANIFEST: {"tensors": [{"name": ..., "shape": [...], "file": raw little-endian float32}]}
Fake `torch` classes make pickle emit the same GLOBAL names torch uses.
"""
import collections
import io
import json
import pickle
import sys
import types
import zipfile

torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
sys.modules["torch"] = torch
sys.modules["torch._utils"] = utils


class FloatStorage:
    pass


FloatStorage.__module__ = "torch"
torch.FloatStorage = FloatStorage


def _rebuild_tensor_v2(*args):
    raise RuntimeError("never called")


_rebuild_tensor_v2.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2


class Tensor:
    def __init__(self, key, shape, numel):
        self.key, self.shape, self.numel = key, shape, numel

    def __reduce_ex__(self, protocol):
        stride, acc = [], 1
        for dim in reversed(self.shape):
            stride.insert(0, acc)
            acc *= dim
        storage = ("storage", FloatStorage, self.key, "cpu", self.numel)
        return (_rebuild_tensor_v2, (Storage(storage), 0, tuple(self.shape), tuple(stride), False, collections.OrderedDict()))


class Storage:
    def __init__(self, pid):
        self.pid = pid


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, Storage) else None


def main(manifest_path, out_path):
    manifest = json.load(open(manifest_path))
    state = collections.OrderedDict()
    blobs = {}
    for i, t in enumerate(manifest["tensors"]):
        data = open(t["file"], "rb").read()
        state[t["name"]] = Tensor(str(i), t["shape"], len(data) // 4)
        blobs[str(i)] = data
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(state)
    with zipfile.ZipFile(out_path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        for key, data in blobs.items():
            z.writestr(f"archive/data/{key}", data)
        z.writestr("archive/version", "3\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
