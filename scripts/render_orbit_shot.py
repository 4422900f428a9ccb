#!/usr/bin/env python3
"""Renders a camera-move shot with Blender's `bpy` wheel (PyPI, bpy==5.0.1), Cycles on the
CPU, laid out as ../shared/sequences/rolling-ball is (see its README for the channels and the
motion convention): `frame_NNNN.png` (8-bit, the 'Standard' view) and `frame_NNNN.exr`
(multilayer: beauty and Vector).

The camera orbits 36 degrees around a table of textured objects in front of a textured wall
and floor, so near objects sweep across far ones: parallax everywhere and occlusion at every
object's edge, the case a still camera (the shared shot) does not test.

    python -m venv v && v/bin/pip install bpy==5.0.1
    v/bin/python scripts/render_orbit_shot.py OUT_DIR [FRAMES] [WIDTH] [HEIGHT]
"""
import math
import pathlib
import sys

import bpy

ROOT = pathlib.Path(__file__).resolve().parent.parent
IMAGES = ROOT.parent / "shared" / "images"
OUT = pathlib.Path(sys.argv[1])
FRAMES = int(sys.argv[2]) if len(sys.argv) > 2 else 16
WIDTH = int(sys.argv[3]) if len(sys.argv) > 3 else 256
HEIGHT = int(sys.argv[4]) if len(sys.argv) > 4 else 144
ORBIT_DEGREES = 36.0

bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.cycles.device = "CPU"
scene.cycles.samples = 32
scene.cycles.use_denoising = False
scene.cycles.seed = 7
scene.render.use_motion_blur = False
scene.render.resolution_x, scene.render.resolution_y = WIDTH, HEIGHT
scene.render.resolution_percentage = 100
scene.view_settings.view_transform = "Standard"
scene.frame_start, scene.frame_end = 1, FRAMES
layer = scene.view_layers[0]
layer.use_pass_z = False
layer.use_pass_vector = True


def textured(name, image):
    m = bpy.data.materials.new(name)
    m.use_nodes = True
    nodes = m.node_tree.nodes
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = bpy.data.images.load(str(IMAGES / image))
    m.node_tree.links.new(tex.outputs["Color"], nodes["Principled BSDF"].inputs["Base Color"])
    return m


def plain(name, colour):
    m = bpy.data.materials.new(name)
    m.use_nodes = True
    m.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (*colour, 1.0)
    return m


def add(op, material, **kwargs):
    op(**kwargs)
    obj = bpy.context.object
    obj.data.materials.append(material)
    return obj


add(bpy.ops.mesh.primitive_plane_add, textured("floor", "coffee.png"), size=12, location=(0, 0, 0))
wall = add(bpy.ops.mesh.primitive_plane_add, textured("wall", "chelsea.png"), size=10,
           location=(0, 4, 3), rotation=(math.pi / 2, 0, 0))
add(bpy.ops.mesh.primitive_uv_sphere_add, textured("ball", "astronaut.png"), radius=0.8,
    location=(-1.2, 0.5, 0.8))
add(bpy.ops.mesh.primitive_cube_add, textured("box", "shipwreck.jpg"), size=1.2,
    location=(1.3, 1.2, 0.6))
add(bpy.ops.mesh.primitive_cylinder_add, plain("post", (0.7, 0.25, 0.15)), radius=0.25,
    depth=2.4, location=(0.2, -0.8, 1.2))
bpy.ops.object.light_add(type="SUN", location=(3, -3, 6), rotation=(0.6, 0.2, 0.4))
bpy.context.object.data.energy = 3.5

# The camera orbits the table's centre at a fixed height, always looking at it; its angle is
# linear in time (no easing), keyed at the first and last frame.
bpy.ops.object.empty_add(location=(0, 0.4, 0.9))
target = bpy.context.object
bpy.ops.object.empty_add(location=(0, 0.4, 0))
pivot = bpy.context.object
bpy.ops.object.camera_add(location=(0, -7.0, 2.6))
camera = bpy.context.object
camera.parent = pivot
track = camera.constraints.new("TRACK_TO")
track.target = target
track.track_axis, track.up_axis = "TRACK_NEGATIVE_Z", "UP_Y"
scene.camera = camera
bpy.context.preferences.edit.keyframe_new_interpolation_type = "LINEAR"
half = math.radians(ORBIT_DEGREES / 2)
for frame, angle in [(1, -half), (FRAMES, half)]:
    pivot.rotation_euler = (0, 0, angle)
    pivot.keyframe_insert("rotation_euler", frame=frame)

OUT.mkdir(parents=True, exist_ok=True)
for frame in range(1, FRAMES + 1):
    scene.frame_set(frame)
    for kind, fmt in [("exr", "OPEN_EXR_MULTILAYER"), ("png", "PNG")]:
        settings = scene.render.image_settings
        if fmt == "OPEN_EXR_MULTILAYER":
            settings.media_type = "MULTI_LAYER_IMAGE"
        else:
            settings.media_type = "IMAGE"
        settings.file_format = fmt
        if kind == "exr":
            settings.color_depth = "16"
            settings.exr_codec = "ZIP"
        else:
            settings.color_depth = "8"
            settings.color_mode = "RGB"
        scene.render.filepath = str(OUT / f"frame_{frame:04d}.{kind}")
        bpy.ops.render.render(write_still=True)
print(f"wrote {FRAMES} frames to {OUT}")
