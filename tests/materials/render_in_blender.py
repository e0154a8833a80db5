"""Imports a generated .usda into Blender and renders it on a sphere.

Usage: render_in_blender.py DOCUMENT.usda OUTPUT.png

Checks that the import made a material whose image nodes read the texture
files beside the document, renders a small image of a sphere with that
material in Cycles, and prints one JSON line: the images' paths, and the
render's mean and variance. Exits 1 with a message on any problem.
"""

import json
import os
import sys

import bpy

document, output = sys.argv[1], sys.argv[2]
folder = os.path.dirname(os.path.abspath(document))

bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.wm.usd_import(filepath=document, import_all_materials=True)
materials = [m for m in bpy.data.materials if m.node_tree is not None]
if not materials:
    sys.exit("the import made no material")
material = materials[0]
images = [
    bpy.path.abspath(node.image.filepath)
    for node in material.node_tree.nodes
    if node.type == "TEX_IMAGE" and node.image is not None
]
if not images:
    sys.exit("the material reads no image")
for path in images:
    if os.path.dirname(os.path.abspath(path)) != folder or not os.path.isfile(path):
        sys.exit(f"an image node reads {path}, not a file beside the document")

scene = bpy.context.scene
bpy.ops.mesh.primitive_uv_sphere_add(radius=1.0, segments=48, ring_count=24)
sphere = bpy.context.active_object
bpy.ops.object.shade_smooth()
sphere.data.materials.append(material)
camera_data = bpy.data.cameras.new("camera")
camera = bpy.data.objects.new("camera", camera_data)
scene.collection.objects.link(camera)
camera.location = (0.0, -4.0, 0.0)
camera.rotation_euler = (1.5708, 0.0, 0.0)
scene.camera = camera
light_data = bpy.data.lights.new("sun", type="SUN")
light_data.energy = 4.0
light = bpy.data.objects.new("sun", light_data)
light.rotation_euler = (0.8, 0.2, 0.5)
scene.collection.objects.link(light)
world = bpy.data.worlds.new("world")
world.color = (0.05, 0.05, 0.05)
scene.world = world

scene.render.engine = "CYCLES"
scene.cycles.device = "CPU"
scene.cycles.samples = 8
scene.render.resolution_x = 64
scene.render.resolution_y = 64
scene.render.image_settings.file_format = "PNG"
scene.render.filepath = output
bpy.ops.render.render(write_still=True)

rendered = bpy.data.images.load(output)
pixels = list(rendered.pixels)
luma = [
    0.2126 * pixels[i] + 0.7152 * pixels[i + 1] + 0.0722 * pixels[i + 2]
    for i in range(0, len(pixels), 4)
]
mean = sum(luma) / len(luma)
variance = sum((v - mean) ** 2 for v in luma) / len(luma)
print(json.dumps({"images": images, "mean": mean, "variance": variance}))
