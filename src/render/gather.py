# Run by renderswarm inside Blender (`blender -b --factory-startup
# --python-exit-code 1 --python-expr THIS -- SCENE STAGING REPORT`).
#
# 1. Walk the scene and, recursively, every linked library: open each .blend
#    and list the files it uses (blend_paths: textures, sequences, caches,
#    fonts, sounds, libraries), made absolute against that .blend.
# 2. The bundle's root is the deepest folder holding the scene's folder and
#    every file that exists; each file keeps its place under that root.
# 3. Re-save every .blend into the staging folder at its place, with all its
#    paths made relative (so absolute paths point inside the bundle) and
#    without relative remapping (which would point them back at the
#    originals). The originals are never written.
# 4. Write a JSON report; the caller copies the other files and says which
#    are missing.
import json
import os
import sys

import bpy

argv = sys.argv[sys.argv.index("--") + 1:]
SCENE, STAGING, REPORT = (os.path.abspath(a) for a in argv[:3])
bpy.context.preferences.filepaths.save_version = 0


def norm(path):
    return os.path.normpath(os.path.abspath(path))


def open_blend(path):
    bpy.ops.wm.open_mainfile(filepath=path, load_ui=False, use_scripts=False)


def sequences():
    """Absolute paths of images whose frames are separate files."""
    seqs = set()
    for img in bpy.data.images:
        if img.library is None and img.source in {"SEQUENCE", "TILED"}:
            seqs.add(norm(bpy.path.abspath(img.filepath)))
    return seqs


def bake_folders():
    """Folders that simulations bake into: gathered when baked, not missing
    when not (the node simulates, as Blender here would)."""
    dirs = set()
    for ob in bpy.data.objects:
        if ob.library is not None:
            continue
        for md in ob.modifiers:
            if md.type == "FLUID" and md.fluid_type == "DOMAIN":
                dirs.add(norm(bpy.path.abspath(md.domain_settings.cache_directory)))
            elif md.type == "OCEAN":
                dirs.add(norm(bpy.path.abspath(md.filepath)))
    return dirs


def uses_of(blend):
    """(libraries, assets) used by the open .blend itself."""
    libs = {norm(bpy.path.abspath(lib.filepath)) for lib in bpy.data.libraries}
    seqs = sequences()
    bakes = bake_folders()
    assets = []
    for raw in bpy.utils.blend_paths(absolute=True, packed=False, local=True):
        if not raw:
            continue  # a disk cache not yet named: nothing to gather
        path = norm(raw)
        if path in libs or path == blend:
            continue
        seq = path in seqs or "<UDIM>" in path or "<UVTILE>" in path
        assets.append({"path": path, "sequence": seq, "optional": path in bakes, "used_by": blend})
    return sorted(libs), assets


def walk(scene):
    blends, assets, missing_libs = [], [], []
    queue = [scene]
    while queue:
        blend = queue.pop(0)
        if blend in blends:
            continue
        if not os.path.isfile(blend):
            missing_libs.append(blend)
            continue
        open_blend(blend)
        blends.append(blend)
        libs, found = uses_of(blend)
        assets.extend(found)
        queue.extend(lib for lib in libs if lib not in blends)
    return blends, assets, missing_libs


def anchor(asset):
    """The folder (or file) an asset needs inside the bundle."""
    path = asset["path"]
    if asset["sequence"] or not os.path.exists(path):
        return os.path.dirname(path)
    return path


def in_session_temp(path):
    """Under a Blender session's temporary folder (`/tmp/blender_XXXXXX/`,
    where the bake folders of a scene made before it was first saved point):
    leftovers of some past session, never part of the scene."""
    temp = bpy.app.tempdir
    if not temp:
        return False
    parent = os.path.dirname(norm(temp))
    rel = os.path.relpath(path, parent)
    return not rel.startswith("..") and rel.split(os.sep)[0].startswith("blender_")


def bundle_root(blends, assets):
    places = [os.path.dirname(b) for b in blends]
    for a in assets:
        place = anchor(a)
        if a["optional"] and in_session_temp(place):
            continue
        if os.path.exists(place):
            places.append(place if os.path.isdir(place) else os.path.dirname(place))
    return os.path.commonpath(places)


def stage(blends, root):
    for blend in blends:
        open_blend(blend)
        bpy.ops.file.make_paths_relative()
        target = os.path.join(STAGING, os.path.relpath(blend, root))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        bpy.ops.wm.save_as_mainfile(filepath=target, copy=True, relative_remap=False, compress=False)


def main():
    blends, assets, missing_libs = walk(norm(SCENE))
    root = bundle_root(blends, assets)
    stage(blends, root)
    report = {
        "root": root,
        "scene": os.path.relpath(norm(SCENE), root),
        "blends": [os.path.relpath(b, root) for b in blends],
        "assets": assets,
        "missing_libraries": missing_libs,
    }
    with open(REPORT, "w") as f:
        json.dump(report, f, indent=1)


main()
