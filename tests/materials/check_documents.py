"""Checks generated material documents with the tools users open them with.

Usage: check_documents.py MANIFEST.json

The manifest lists, per material, its directory, id, display name, the
channels whose files are in the directory, its PBR values and the file
names of its `.mtlx` and `.usda`. This script works out independently what
each document must say (which input reads which file, which constant each
untextured input gets, sRGB -> linear for colours) and checks that:

- MaterialX (`MaterialX`, 1.39) reads the `.mtlx`, and `validate()` passes
  with the standard data libraries; the material is one `surfacematerial`
  fed by a `standard_surface`; every `file` input resolves to an existing
  file beside the document, with the colour space its channel needs;
- USD (`usd-core`) opens the `.usda`, its default prim is a Material whose
  surface is a `UsdPreviewSurface`; every texture asset path resolves to an
  existing file; colour spaces, the `st` reader and the normal map's
  scale and bias are right; the constants equal the catalog's values.

Prints one line per problem and exits 1 if there is any.
"""

import json
import math
import os
import struct
import sys

import MaterialX as mx
from pxr import Sdf, Usd, UsdShade

SRGB = {"color", "emission"}
# Channel -> (standard_surface input, UsdPreviewSurface input).
WIRED = {
    "color": ("base_color", "diffuseColor"),
    "normal": ("normal", "normal"),
    "roughness": ("specular_roughness", "roughness"),
    "metalness": ("metalness", "metallic"),
    "ao": (None, "occlusion"),
    "displacement": (None, "displacement"),
    "emission": ("emission_color", "emissiveColor"),
    "opacity": ("opacity", "opacity"),
}

problems = []


def problem(material, text):
    problems.append(f"{material['id']!r}: {text}")


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def srgb_to_linear(c):
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def close(a, b):
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7)


def expected_constants(material):
    """(MaterialX inputs, USD inputs) the catalog values must give."""
    pbr, channels = material["pbr"], set(material["channels"])
    mtlx, usd = {"base": 1.0}, {}
    if "color" not in channels and pbr.get("color_rgb") is not None:
        linear = [f32(srgb_to_linear(c)) for c in pbr["color_rgb"]]
        mtlx["base_color"] = linear
        usd["diffuseColor"] = linear
    for key, mtlx_input, usd_input, channel in [
        ("roughness", "specular_roughness", "roughness", "roughness"),
        ("metalness", "metalness", "metallic", "metalness"),
        ("ior", "specular_IOR", "ior", None),
        ("specular_intensity", "specular", None, None),
        ("transmission", "transmission", None, None),
        ("clearcoat", "coat", "clearcoat", None),
        ("clearcoat_roughness", "coat_roughness", "clearcoatRoughness", None),
    ]:
        value = pbr.get(key)
        if value is None or channel in channels:
            continue
        mtlx[mtlx_input] = value
        if usd_input:
            usd[usd_input] = value
    if "emission" in channels:
        mtlx["emission"] = 1.0
    elif pbr.get("emissive") is not None:
        mtlx["emission"] = 1.0
        mtlx["emission_color"] = pbr["emissive"]
        usd["emissiveColor"] = pbr["emissive"]
    if "opacity" not in channels and pbr.get("transmission") is not None:
        usd["opacity"] = f32(1.0 - pbr["transmission"])
    return mtlx, usd


def value_of(v):
    if isinstance(v, (int, float)):
        return float(v)
    return [float(x) for x in v]


def check_materialx(material, stdlib):
    directory = material["dir"]
    path = os.path.join(directory, material["mtlx"])
    doc = mx.createDocument()
    if "\\" in path:
        # MaterialX's FilePath takes a backslash for a separator: such a
        # path cannot be opened by name, only its content read.
        with open(path, encoding="utf-8") as f:
            mx.readFromXmlString(doc, f.read())
    else:
        mx.readFromXmlFile(doc, path)
    doc.setDataLibrary(stdlib)
    valid, message = doc.validate()
    if not valid:
        problem(material, f"MaterialX validate() failed: {message}")
    materials = doc.getMaterialNodes()
    if len(materials) != 1:
        problem(material, f"{len(materials)} materials in the .mtlx")
        return
    surface = materials[0]
    if surface.getAttribute("matvis_id") != material["id"]:
        problem(material, f"matvis_id is {surface.getAttribute('matvis_id')!r}")
    if (surface.getAttribute("matvis_name") or None) != material["name"]:
        problem(material, f"matvis_name is {surface.getAttribute('matvis_name')!r}")
    shader = surface.getConnectedNode("surfaceshader")
    if shader is None or shader.getCategory() != "standard_surface":
        problem(material, "the material is not fed by a standard_surface")
        return
    if shader.getNodeDef() is None:
        problem(material, "standard_surface has no node definition")

    files = {}
    for element in doc.traverseTree():
        if element.isA(mx.Input) and element.getType() == "filename":
            files[element.getValueString()] = element
    want = {f"{c}.png" for c in material["channels"]}
    if set(files) != want:
        problem(material, f"file inputs {sorted(files)}, expected {sorted(want)}")
    for name, element in files.items():
        if not os.path.isfile(os.path.join(directory, name)):
            problem(material, f"{name} does not resolve beside the .mtlx")
        channel = name[: -len(".png")]
        space = element.getColorSpace()
        if space != ("srgb_texture" if channel in SRGB else ""):
            problem(material, f"{name} has colour space {space!r}")
        if element.getActiveColorSpace() not in ("srgb_texture", "lin_rec709"):
            problem(material, f"{name} reads in {element.getActiveColorSpace()!r}")
    if "normal" in material["channels"]:
        normal = shader.getInput("normal")
        upstream = normal.getConnectedOutput() if normal else None
        if upstream is None or upstream.getConnectedNode().getCategory() != "normalmap":
            problem(material, "the normal input is not fed by a normalmap node")

    constants, _ = expected_constants(material)
    for channel in material["channels"]:
        name = WIRED[channel][0]
        if name and (shader.getInput(name) is None or not shader.getInput(name).getConnectedOutput()):
            problem(material, f"standard_surface.{name} is not wired to {channel}.png")
    for name, want_value in constants.items():
        given = shader.getInput(name)
        if given is None or given.getValue() is None:
            problem(material, f"standard_surface.{name} missing, expected {want_value}")
            continue
        got = given.getValue()
        got = float(got) if isinstance(got, float) else list(got.asTuple())
        if not close(got, value_of(want_value)):
            problem(material, f"standard_surface.{name} = {got}, expected {want_value}")
    for given in shader.getInputs():
        if given.getValue() is not None and given.getName() not in constants:
            problem(material, f"unexpected constant standard_surface.{given.getName()}")
    displacement = surface.getConnectedNode("displacementshader")
    if ("displacement" in material["channels"]) != (displacement is not None):
        problem(material, "displacement shader present iff a displacement texture")


def check_usd(material):
    directory = material["dir"]
    stage = Usd.Stage.Open(os.path.join(directory, material["usda"]))
    prim = stage.GetDefaultPrim()
    if not prim or not prim.IsA(UsdShade.Material):
        problem(material, "the default prim is not a Material")
        return
    usd_material = UsdShade.Material(prim)
    if prim.GetCustomDataByKey("matvis_id") != material["id"]:
        problem(material, f"customData matvis_id is {prim.GetCustomDataByKey('matvis_id')!r}")
    if prim.GetCustomDataByKey("matvis_name") != material["name"]:
        problem(material, f"customData matvis_name is {prim.GetCustomDataByKey('matvis_name')!r}")
    source = usd_material.ComputeSurfaceSource()
    surface = source[0] if source else None
    if not surface or surface.GetIdAttr().Get() != "UsdPreviewSurface":
        problem(material, "the surface is not a UsdPreviewSurface")
        return

    textures = {}
    for child in prim.GetChildren():
        shader = UsdShade.Shader(child)
        if shader and shader.GetIdAttr().Get() == "UsdUVTexture":
            textures[child.GetName()] = shader
    want = {f"{c}_texture" for c in material["channels"]}
    if set(textures) != want:
        problem(material, f"textures {sorted(textures)}, expected {sorted(want)}")
    for name, shader in textures.items():
        channel = name[: -len("_texture")]
        asset = shader.GetInput("file").Get()
        if asset.path != f"./{channel}.png":
            problem(material, f"{name} reads {asset.path!r}")
        if "\\" in directory:
            # USD's resolver, like MaterialX, takes a backslash in the
            # directory for a separator: check the path the document gives.
            if not os.path.isfile(os.path.join(directory, asset.path)):
                problem(material, f"{name}: {asset.path!r} is not beside the .usda")
        elif not asset.resolvedPath or not os.path.isfile(asset.resolvedPath):
            problem(material, f"{name}: {asset.path!r} does not resolve to a file")
        elif os.path.dirname(asset.resolvedPath) != os.path.realpath(directory):
            problem(material, f"{name} resolves outside the material: {asset.resolvedPath}")
        space = shader.GetInput("sourceColorSpace").Get()
        if space != ("sRGB" if channel in SRGB else "raw"):
            problem(material, f"{name} has sourceColorSpace {space!r}")
        st = shader.GetInput("st").GetConnectedSources()[0]
        reader = UsdShade.Shader(st[0].source.GetPrim()) if st else None
        if (
            not reader
            or reader.GetIdAttr().Get() != "UsdPrimvarReader_float2"
            or reader.GetInput("varname").Get() != "st"
        ):
            problem(material, f"{name}.st is not read from the st primvar")
        if channel == "normal":
            if tuple(shader.GetInput("scale").Get()) != (2, 2, 2, 1) or tuple(
                shader.GetInput("bias").Get()
            ) != (-1, -1, -1, 0):
                problem(material, "the normal map is not scaled (2,2,2,1) and biased (-1,-1,-1,0)")
        wired = surface.GetInput(WIRED[channel][1])
        sources = wired.GetConnectedSources()[0] if wired else []
        if not sources or sources[0].source.GetPrim() != shader.GetPrim():
            problem(material, f"UsdPreviewSurface.{WIRED[channel][1]} is not wired to {name}")

    _, constants = expected_constants(material)
    for name, want_value in constants.items():
        given = surface.GetInput(name)
        got = given.Get() if given else None
        if got is None:
            problem(material, f"UsdPreviewSurface.{name} missing, expected {want_value}")
            continue
        got = float(got) if isinstance(got, float) else [float(x) for x in got]
        if not close(got, value_of(want_value)):
            problem(material, f"UsdPreviewSurface.{name} = {got}, expected {want_value}")
    for given in surface.GetInputs():
        if given.Get() is not None and given.GetBaseName() not in constants:
            problem(material, f"unexpected constant UsdPreviewSurface.{given.GetBaseName()}")
    displaced = usd_material.GetDisplacementOutput().HasConnectedSource()
    if displaced != ("displacement" in material["channels"]):
        problem(material, "displacement output connected iff a displacement texture")


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        materials = json.load(f)
    stdlib = mx.createDocument()
    mx.loadLibraries(mx.getDefaultDataLibraryFolders(), mx.getDefaultDataSearchPath(), stdlib)
    for material in materials:
        check_materialx(material, stdlib)
        check_usd(material)
    for line in problems:
        print(line)
    print(f"checked {len(materials)} materials with MaterialX {mx.__version__} and USD "
          f"{'.'.join(map(str, Usd.GetVersion()))}: {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
