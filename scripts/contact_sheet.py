"""Contact sheet of `stylize bench --presets --out-dir` results: one row per pair,
columns content | pytorch | draft | standard | final, labelled. Needs Pillow.
Usage: contact_sheet.py OUT.(png|jpg) TILE SIZE LABEL=DIR:CONTENT [LABEL=DIR:CONTENT ...]"""
import sys
from PIL import Image, ImageDraw

out, tile, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [a.split("=", 1) for a in sys.argv[4:]]
runs = ["content", "pytorch", "draft", "standard", "final"]
label_h = 18
sheet = Image.new("RGB", (tile * len(runs), (tile + label_h) * len(rows)), "white")
draw = ImageDraw.Draw(sheet)
for r, (label, spec) in enumerate(rows):
    directory, content = spec.split(":", 1)
    for c, run in enumerate(runs):
        path = content if run == "content" else f"{directory}/{run}-{size}.png"
        x, y = c * tile, r * (tile + label_h)
        try:
            image = Image.open(path).convert("RGB")
        except FileNotFoundError:
            draw.text((x + 4, y + label_h + tile // 2), "not run", fill="gray")
        else:
            image.thumbnail((tile, tile))
            sheet.paste(image, (x + (tile - image.width) // 2, y + label_h + (tile - image.height) // 2))
        draw.text((x + 4, y + 3), f"{label}: {run}" if c == 0 else run, fill="black")
sheet.save(out, quality=88)
