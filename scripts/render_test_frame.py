#!/usr/bin/env python3
"""Renders tests/data/emissive.exr with Blender's `bpy` wheel (PyPI, bpy==5.0.1), Cycles on
the CPU: a multilayer OpenEXR frame as a render farm hands it to compositing, for the tests
of what must survive a stylisation (docs/colour.md):

- a sphere emitting light at strength 20 (pixels far above 1.0), beside a diffuse cube and a
  textured floor under a sun;
- a transparent film: the sky is alpha 0, the objects' edges partial;
- a depth pass (`ViewLayer.Depth.Z`);
- a custom header attribute: the stamp note `stylize-test-frame`.

    python -m venv v && v/bin/pip install bpy==5.0.1 && v/bin/python scripts/render_test_frame.py

`render_test_frame.py OUT.exr SCALE` renders the same frame SCALE times larger elsewhere (the
picture in docs/colour.md uses SCALE 4).
"""
import pathlib
import sys

import bpy

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests/data/emissive.exr"
SCALE = int(sys.argv[2]) if len(sys.argv) > 2 else 1

bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.cycles.device = "CPU"
scene.cycles.samples = 32
scene.cycles.use_denoising = False
scene.render.resolution_x, scene.render.resolution_y = 96 * SCALE, 64 * SCALE
scene.render.resolution_percentage = 100
scene.render.film_transparent = True
scene.render.image_settings.media_type = "MULTI_LAYER_IMAGE"
scene.render.image_settings.file_format = "OPEN_EXR_MULTILAYER"
scene.render.image_settings.color_depth = "16"
scene.render.image_settings.exr_codec = "ZIP"
scene.render.use_stamp_note = True
scene.render.stamp_note_text = "stylize-test-frame"
scene.render.use_stamp = False  # metadata only, nothing burnt in
scene.view_layers[0].use_pass_z = True

def material(name, colour, emission=0.0):
    m = bpy.data.materials.new(name)
    m.use_nodes = True
    bsdf = m.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*colour, 1.0)
    if emission:
        bsdf.inputs["Emission Color"].default_value = (*colour, 1.0)
        bsdf.inputs["Emission Strength"].default_value = emission
    return m

bpy.ops.mesh.primitive_plane_add(size=8, location=(0, 0, 0))
bpy.context.object.data.materials.append(material("floor", (0.5, 0.45, 0.4)))
bpy.ops.mesh.primitive_uv_sphere_add(radius=0.7, location=(-0.9, 0, 0.7))
bpy.context.object.data.materials.append(material("lamp", (1.0, 0.85, 0.6), emission=20.0))
bpy.ops.mesh.primitive_cube_add(size=1.0, location=(1.0, 0.3, 0.5))
bpy.context.object.data.materials.append(material("cube", (0.2, 0.4, 0.8)))
bpy.ops.object.light_add(type="SUN", location=(2, -2, 5))
bpy.context.object.data.energy = 3.0
bpy.ops.object.camera_add(location=(0, -5.5, 2.2), rotation=(1.2, 0, 0))
scene.camera = bpy.context.object
# Tilted up: the top of the frame is sky, which the transparent film leaves at alpha 0.
scene.render.filepath = str(OUT)
bpy.ops.render.render(write_still=True)
print(f"wrote {OUT}")
