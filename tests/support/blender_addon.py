"""Drive the renderswarm Blender add-on (contrib/blender) inside background
Blender, as an artist would through its panel. Used by tests/it/addon.rs.

    blender -b [SCENE] --python-exit-code 1 --python blender_addon.py -- CONFIG

CONFIG is JSON: {"addon": path, "mode": "submit" | "errors", ...}. The add-on
is installed and enabled through Blender's own Preferences operators (run
with BLENDER_USER_CONFIG / BLENDER_USER_SCRIPTS pointing at a temporary
folder). Each finding is printed as `RENDERSWARM_TEST KEY JSON`; anything
unexpected raises, so Blender exits 1.
"""

import json
import os
import sys
import time
import types

import bpy

cfg = json.loads(sys.argv[sys.argv.index("--") + 1])


def say(key, value):
    print("RENDERSWARM_TEST %s %s" % (key, json.dumps(value)), flush=True)


def check(ok, what):
    if not ok:
        raise SystemExit("renderswarm add-on test: " + what)


ICONS = set(bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items.keys())


class FakeLayout:
    """Stands in for a UILayout in background mode: records what is drawn,
    and checks that the properties, operators and icons it names exist."""

    def __init__(self, lines):
        self.lines = lines

    def _child(self, *args, **kwargs):
        return FakeLayout(self.lines)

    row = column = box = split = _child

    def _icon(self, kwargs):
        check(kwargs.get("icon", "NONE") in ICONS, "no such icon: %s" % kwargs.get("icon"))

    def label(self, text="", **kwargs):
        self._icon(kwargs)
        self.lines.append(text)

    def prop(self, data, name, **kwargs):
        self._icon(kwargs)
        check(hasattr(data, name), "the panel draws a missing property " + name)
        self.lines.append("[%s]" % name)

    def operator(self, idname, **kwargs):
        self._icon(kwargs)
        group, name = idname.split(".")
        check(name in dir(getattr(bpy.ops, group)), "no such operator: " + idname)
        self.lines.append("<%s>" % idname)
        return types.SimpleNamespace()

    def separator(self, **kwargs):
        pass


def draw_panel():
    lines = []
    panel = bpy.types.RENDERSWARM_PT_output
    check(panel.bl_context == "output", "the panel is not in the Output properties")
    panel.draw(types.SimpleNamespace(layout=FakeLayout(lines)), bpy.context)
    return lines


def submit_error():
    """Submit, expecting a refusal; the operator's report, as Blender
    turns an ERROR report into an exception for a script."""
    try:
        result = bpy.ops.renderswarm.submit()
    except RuntimeError as e:
        message = str(e)
        check("Traceback" not in message, "the operator raised: " + message)
        return message
    raise SystemExit("submit was expected to fail but returned %s" % result)


# Install and enable the add-on the way Preferences > Add-ons > Install does.
bpy.ops.preferences.addon_install(filepath=cfg["addon"], overwrite=True)
bpy.ops.preferences.addon_enable(module="renderswarm_addon")
addon = sys.modules["renderswarm_addon"]
say("installed", addon.__file__)
prefs = bpy.context.preferences.addons["renderswarm_addon"].preferences
check(prefs.api_url == "http://127.0.0.1:7878", "default API URL is " + prefs.api_url)
# Without the scheme, as `swarm node --web` takes it: the add-on adds http://.
prefs.api_url = cfg["api"].replace("http://", "")
prefs.token = cfg.get("token", "")

scene = bpy.context.scene
s = scene.renderswarm

if cfg["mode"] == "submit":
    say("default_frames", addon.frames_text(scene))
    s.use_scene_range = False
    say("own_range_starts_at", [s.frame_start, s.frame_end])
    s.frame_start, s.frame_end = cfg["frames"]
    s.frames_per_task = cfg["frames_per_task"]
    s.priority = cfg["priority"]
    s.collect_dir = cfg["collect"]
    result = bpy.ops.renderswarm.submit()
    check(result == {"FINISHED"}, "submit returned %s: %s" % (result, s.message))
    check(not bpy.data.is_dirty, "the file was not saved before submitting")
    say("job", s.job_id)
    check(bpy.app.timers.is_registered(addon._progress_timer), "no progress timer after submitting")

    addon.poll_job(scene)
    say("first_poll", draw_panel())

    deadline = time.monotonic() + cfg["deadline_secs"]
    while addon.poll_job(scene):
        check(time.monotonic() < deadline, "the job did not finish: " + addon.status_line(s))
        time.sleep(0.5)
    say("final_poll", draw_panel())
    check(addon._progress_timer() is None, "the progress timer goes on after the job ended")

    result = bpy.ops.renderswarm.open_page()
    check(result == {"FINISHED"}, "open_page returned %s" % result)

elif cfg["mode"] == "errors":
    message = submit_error()
    say("unreachable", message)
    say("unreachable_panel", draw_panel())

    prefs.api_url = cfg["node"]
    prefs.token = "not-the-token"
    say("bad_token", submit_error())

    prefs.token = cfg["token"]
    s.collect_dir = cfg["not_a_dir"]
    say("bad_field", submit_error())
    s.collect_dir = ""

    s.use_scene_range = False
    s.frame_start, s.frame_end = 3, 1
    say("backwards", submit_error())

    bpy.ops.wm.read_homefile(use_empty=True)
    check(not bpy.data.filepath, "the home file has a path")
    say("never_saved", submit_error())

say("ok", True)
