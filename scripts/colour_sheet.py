#!/usr/bin/env python3
"""The picture docs/colour.md shows: a scene-linear frame with lights from 2 to 50 times
diffuse white, stylised through the `srgb` view (highlights clipped) and through the
`acescct` view (highlights kept), each shown at two exposures (as it is, and 5 stops darker,
where only light above 1.0 is still bright).

    scripts/colour_sheet.py OUT.jpg      (needs numpy, pillow and OpenEXR from PyPI, and
                                         target/release/stylize with its models)
"""
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import OpenEXR
from PIL import Image, ImageDraw

ROOT = pathlib.Path(__file__).resolve().parent.parent
SIDE = 256
LIGHTS = [2.0, 5.0, 10.0, 20.0, 50.0]


def linear(srgb):
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def frame():
    photo = Image.open(ROOT / "assets/chelsea.png").convert("RGB").resize((SIDE, SIDE // 3 * 2))
    rgb = linear(np.asarray(photo, dtype=np.float32) / 255.0)
    for k, light in enumerate(LIGHTS):
        x = 16 + k * 48
        rgb[12:40, x:x + 28] = light
    return rgb


def write_exr(path, rgb):
    channels = {"R": rgb[..., 0].copy(), "G": rgb[..., 1].copy(), "B": rgb[..., 2].copy()}
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                 channels).write(str(path))


def read_exr(path):
    with OpenEXR.File(str(path), separate_channels=True) as f:
        ch = f.channels()
        return np.stack([ch[c].pixels.astype(np.float32) for c in "RGB"], axis=-1)


def shown(rgb, stops):
    v = np.clip(rgb * 2.0 ** stops, 0.0, 1.0)
    v = np.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055)
    return Image.fromarray((v * 255 + 0.5).astype(np.uint8))


def main(out):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        write_exr(tmp / "in.exr", frame())
        rows = [("input (scene-linear)", read_exr(tmp / "in.exr"))]
        for view in ["srgb", "acescct"]:
            subprocess.run([str(ROOT / "target/release/stylize"), "run", "--content", str(tmp / "in.exr"),
                            "--view", view, "--size", str(SIDE), "--quality", "draft",
                            "--progress", "none", "--out", str(tmp / f"{view}.exr")], check=True)
            rows.append((f"stylised through {view}", read_exr(tmp / f"{view}.exr")))
    h, w = rows[0][1].shape[:2]
    sheet = Image.new("RGB", (2 * w + 30, len(rows) * (h + 22) + 22), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((10, 4), "as it is", fill="black")
    draw.text((w + 20, 4), "5 stops darker", fill="black")
    for r, (label, rgb) in enumerate(rows):
        y = 22 + r * (h + 22)
        for c, stops in enumerate([0, -5]):
            sheet.paste(shown(rgb, stops), (10 + c * (w + 10), y))
        draw.text((10, y + h + 4), label, fill="black")
    sheet.save(out, quality=90)


if __name__ == "__main__":
    main(sys.argv[1])
