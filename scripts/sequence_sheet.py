"""Pictures of `stylize sequence --compare-stills`: a contact sheet (rows: the rendered frames,
the independent stills, the sequence; every STEP-th frame) and an animated GIF with the
stills and the sequence side by side, so the flicker and its absence can be seen. Needs
Pillow. Usage: sequence_sheet.py FRAMES STILLS SEQUENCE SHEET.jpg ANIMATION.gif [STEP
[LABEL LABEL [MARKED]]] (FRAMES, STILLS, SEQUENCE: patterns with #### for the frame number;
the two LABELs name the stylised rows, e.g. `chain` and `parallel` for `stylize bench
--shot --out-dir`; MARKED, comma-separated frame numbers, e.g. the joins, labelled so)."""
import glob
import re
import sys
from PIL import Image, ImageDraw

frames, stills, sequence, sheet_path, gif_path = sys.argv[1:6]
step = int(sys.argv[6]) if len(sys.argv) > 6 else 3
names = sys.argv[7:9] if len(sys.argv) > 8 else ["stills", "sequence"]
marked = {int(n) for n in sys.argv[9].split(",")} if len(sys.argv) > 9 else set()


def numbered(pattern):
    width = pattern.count("#")
    regex = re.compile(re.escape(pattern).replace("\\#" * width, r"(\d{%d,})" % width) + "$")
    found = {}
    for path in glob.glob(pattern.replace("#" * width, "*")):
        match = regex.match(path)
        if match:
            found[int(match.group(1))] = path
    return [found[n] for n in sorted(found)]


rows = [("rendered", numbered(frames)), (names[0], numbered(stills)), (names[1], numbered(sequence))]
count = min(len(paths) for _, paths in rows)
if count == 0:
    sys.exit("no frames found")
tile_w, tile_h = Image.open(rows[1][1][0]).size
label_h = 16
picked = list(range(0, count, step))
sheet = Image.new("RGB", (tile_w * len(picked), (tile_h + label_h) * len(rows)), "white")
draw = ImageDraw.Draw(sheet)
for r, (label, paths) in enumerate(rows):
    for c, t in enumerate(picked):
        image = Image.open(paths[t]).convert("RGB").resize((tile_w, tile_h))
        x, y = c * tile_w, r * (tile_h + label_h)
        sheet.paste(image, (x, y + label_h))
        draw.text((x + 4, y + 2), f"{label}, frame {t + 1}", fill="black")
sheet.save(sheet_path, quality=88)

animation = []
for t in range(count):
    frame = Image.new("RGB", (2 * tile_w, tile_h + label_h), "white")
    pen = ImageDraw.Draw(frame)
    for c, (label, paths) in enumerate(rows[1:]):
        frame.paste(Image.open(paths[t]).convert("RGB"), (c * tile_w, label_h))
        join = " (join)" if t + 1 in marked and c == 1 else ""
        pen.text((c * tile_w + 4, 2), f"{label} {t + 1}/{count}{join}", fill="black")
    animation.append(frame.quantize(colors=255, method=Image.Quantize.MEDIANCUT))
animation[0].save(gif_path, save_all=True, append_images=animation[1:], duration=125, loop=0)
