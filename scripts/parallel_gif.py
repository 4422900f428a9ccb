#!/usr/bin/env python3
"""The chain beside the parallel method, frame by frame, as an animated GIF (docs/sequences.md).

Reads what `stylize bench --shot ... --out-dir DIR` wrote (DIR/chain_####.png and
DIR/parallel_####.png) and labels each frame, marking the joins. Needs Pillow.
Usage: parallel_gif.py DIR OUT.gif JOIN [JOIN ...]   (joins as frame numbers, e.g. 5 9 13)
"""
import glob
import os
import sys

from PIL import Image, ImageDraw, ImageFont

LABEL_HEIGHT = 16

directory, gif_path = sys.argv[1], sys.argv[2]
joins = {int(number) for number in sys.argv[3:]}
chain = sorted(glob.glob(os.path.join(directory, "chain_*.png")))
parallel = sorted(glob.glob(os.path.join(directory, "parallel_*.png")))
if not chain or len(chain) != len(parallel):
    sys.exit(f"parallel_gif.py: {directory} needs as many chain_####.png as parallel_####.png")
font = ImageFont.load_default(size=13)
frames = []
for index, (left_path, right_path) in enumerate(zip(chain, parallel), start=1):
    left, right = Image.open(left_path).convert("RGB"), Image.open(right_path).convert("RGB")
    width, height = left.size
    canvas = Image.new("RGB", (2 * width, height + LABEL_HEIGHT), "white")
    canvas.paste(left, (0, LABEL_HEIGHT))
    canvas.paste(right, (width, LABEL_HEIGHT))
    draw = ImageDraw.Draw(canvas)
    total = len(chain)
    join = " (join)" if index in joins else ""
    draw.text((2, 1), f"chain {index}/{total}", fill="black", font=font)
    draw.text((width + 2, 1), f"parallel {index}/{total}{join}", fill="black", font=font)
    frames.append(canvas)
frames[0].save(gif_path, save_all=True, append_images=frames[1:], duration=120, loop=0)
