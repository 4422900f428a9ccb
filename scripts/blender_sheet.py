#!/usr/bin/env python3
"""The second picture docs/colour.md shows: a Blender frame (scripts/render_test_frame.py,
transparent film, a lamp at strength 20, a depth pass) stylised with --keep-passes through the
`srgb` and `acescct` views. Each row shows the frame over a checkerboard (its alpha), as it is
and 5 stops darker, then the alpha and the depth pass read from that row's own file: the
same in every row, because they pass through bit for bit.

    /path/to/bpy/python scripts/render_test_frame.py /tmp/frame.exr 4
    scripts/blender_sheet.py /tmp/frame.exr docs/images/blender-sheet.jpg
                                (needs numpy, pillow and OpenEXR from PyPI, and
                                 target/release/stylize with its models)
"""
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image, ImageDraw

from exr_channels import channels

ROOT = pathlib.Path(__file__).resolve().parent.parent


def beauty(found):
    prefix = next(n[:-1] for n in found if n.endswith("Combined.R"))
    rgb = np.stack([found[prefix + c] for c in "RGB"], axis=-1)
    return rgb, found[prefix + "A"], found[next(n for n in found if n.endswith("Depth.Z"))]


def srgb(linear):
    v = np.clip(linear, 0.0, 1.0)
    v = np.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055)
    return Image.fromarray((v * 255 + 0.5).astype(np.uint8))


def over_checker(rgb, alpha, stops):
    h, w = alpha.shape
    yy, xx = np.mgrid[0:h, 0:w]
    checker = np.where(((xx // 16) + (yy // 16)) % 2 == 0, 0.05, 0.12)[..., None]
    return srgb(rgb * 2.0 ** stops + (1.0 - alpha[..., None]) * checker * 2.0 ** max(stops, -1))


def grey(values):
    v = np.repeat(values[..., None], 3, axis=-1)
    return Image.fromarray((np.clip(v, 0, 1) * 255 + 0.5).astype(np.uint8))


def main(frame, out):
    rows = [("input (Blender, scene-linear)", channels(frame))]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for view in ["srgb", "acescct"]:
            styled = tmp / f"{view}.exr"
            rgb, _, _ = beauty(rows[0][1])
            subprocess.run([str(ROOT / "target/release/stylize"), "run", "--content", str(frame),
                            "--view", view, "--size", str(max(rgb.shape[:2])), "--quality", "draft",
                            "--keep-passes", "--progress", "none", "--out", str(styled)], check=True)
            rows.append((f"stylised through {view}, --keep-passes", channels(styled)))
    h, w = beauty(rows[0][1])[1].shape
    columns = ["over a checkerboard", "5 stops darker", "alpha (kept)", "depth (kept)"]
    sheet = Image.new("RGB", (4 * w + 50, len(rows) * (h + 22) + 22), "white")
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(columns):
        draw.text((10 + c * (w + 10), 4), title, fill="black")
    for r, (label, found) in enumerate(rows):
        rgb, alpha, depth = beauty(found)
        near, far = np.percentile(depth[alpha > 0], [1, 99])
        tiles = [over_checker(rgb, alpha, 0), over_checker(rgb, alpha, -5), grey(alpha),
                 grey(1.0 - (depth - near) / (far - near))]
        y = 22 + r * (h + 22)
        for c, tile in enumerate(tiles):
            sheet.paste(tile, (10 + c * (w + 10), y))
        draw.text((10, y + h + 4), label, fill="black")
    sheet.save(out, quality=90)


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]), sys.argv[2])
