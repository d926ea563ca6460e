# renderswarm: submit the open .blend to the renderswarm node on this machine.
#
# One file, the Python standard library only, so it installs through
# Preferences > Add-ons > Install... with nothing else to set up. It talks to
# the node's HTTP API (/api/v1) exactly as `swarm submit` does for a node on
# the same machine: the scene is sent as the saved file's absolute path, and
# the node imports it into its store at once (later edits do not change the
# job). Progress is polled with a bpy.app.timers timer; no thread touches
# Blender data.
#
# Errors are reported to the artist in plain words (self.report), never as a
# traceback: the node answers every error as JSON {"error": ..., "field": ...}.

bl_info = {
    "name": "renderswarm",
    "author": "renderswarm",
    "version": (0, 1, 0),
    "blender": (2, 93, 0),
    "location": "Properties > Output > renderswarm",
    "description": "Render the saved file on a renderswarm farm through the node on this machine",
    "category": "Render",
}

import json
import os
import urllib.error
import urllib.parse
import urllib.request
import webbrowser

import bpy
from bpy.props import (
    BoolProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

DEFAULT_API = "http://127.0.0.1:7878"
# Seconds between progress polls, and the most one HTTP call may take: the
# poll runs in Blender's main loop, so a hung node must not freeze the UI.
POLL_EVERY = 2.0
SUBMIT_TIMEOUT = 60.0
POLL_TIMEOUT = 3.0
FINAL = ("done", "failed", "cancelled")


class NodeError(Exception):
    """The node refused a request, or could not be reached: `str()` says why
    in words fit for the artist. `status` is the HTTP status, if any."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------
# The node's API


def _prefs(context=None):
    context = context or bpy.context
    addon = context.preferences.addons.get(__name__)
    return addon.preferences if addon else None


def _base_url(prefs):
    url = (prefs.api_url if prefs else DEFAULT_API).strip() or DEFAULT_API
    if "://" not in url:
        url = "http://" + url  # `127.0.0.1:7878`, as `swarm node --web` takes it
    return url.rstrip("/")


# The node is on this machine (or the studio's network): no HTTP proxy from
# the environment should stand between Blender and it.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def api_call(prefs, method, path, body=None, timeout=POLL_TIMEOUT):
    """One JSON request to the node's API; returns the decoded answer or
    raises NodeError."""
    base = _base_url(prefs)
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    if method != "GET":
        # The node refuses actions without it (forged-request guard).
        headers["x-renderswarm"] = "1"
    token = prefs.token.strip() if prefs else ""
    if token:
        headers["Authorization"] = "Bearer " + token
    try:
        req = urllib.request.Request(base + "/api/v1" + path, data=data, headers=headers, method=method)
        with _OPENER.open(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        raise NodeError(_refusal(e), e.code) from None
    except urllib.error.URLError as e:
        raise NodeError(
            "cannot reach the renderswarm node at %s (%s): is `swarm node` running, "
            "and is the API URL in the add-on's preferences right?" % (base, _reason(e.reason))
        ) from None
    except (OSError, ValueError) as e:
        # Timeouts, resets, a bad URL, an answer that is not JSON.
        raise NodeError("talking to the renderswarm node at %s failed: %s" % (base, _reason(e))) from None


def _reason(e):
    text = getattr(e, "strerror", None) or str(e)
    return text or e.__class__.__name__


def _refusal(e):
    """The node's own message from an HTTP error answer."""
    try:
        body = json.loads(e.read().decode("utf-8"))
        message = body.get("error") or ""
        field = body.get("field")
    except Exception:  # not the node's JSON: say what HTTP said
        message, field = "", None
    if not message:
        message = "HTTP %d %s" % (e.code, e.reason)
    if field and field != "body":
        message = "%s: %s" % (field, message)
    return "the renderswarm node refused: " + message


# ---------------------------------------------------------------------------
# What the artist sets, and what the panel shows


def _redraw():
    wm = getattr(bpy.context, "window_manager", None)
    for window in getattr(wm, "windows", ()):
        for area in window.screen.areas:
            if area.type == "PROPERTIES":
                area.tag_redraw()


class RenderswarmPreferences(bpy.types.AddonPreferences):
    bl_idname = __name__

    api_url: StringProperty(
        name="Node API",
        description="The renderswarm node's web address (`swarm node --web`)",
        default=DEFAULT_API,
    )
    token: StringProperty(
        name="Web token",
        description="The node's --web-token, if it has one (sent as `Authorization: Bearer TOKEN`)",
        default="",
        subtype="PASSWORD",
    )

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "api_url")
        layout.prop(self, "token")


def _start_from_scene_range(settings, context):
    """Unticking "Scene frame range" starts the own range from the scene's."""
    if not settings.use_scene_range:
        scene = context.scene
        settings.frame_start = max(scene.frame_start, 0)
        settings.frame_end = max(scene.frame_end, 0)
        settings.frame_step = scene.frame_step


class RenderswarmSettings(bpy.types.PropertyGroup):
    use_scene_range: BoolProperty(
        name="Scene frame range",
        description="Render the scene's frame range (Output > Frame Range)",
        default=True,
        update=_start_from_scene_range,
    )
    frame_start: IntProperty(name="Start", description="First frame to render", default=1, min=0)
    frame_end: IntProperty(name="End", description="Last frame to render", default=250, min=0)
    frame_step: IntProperty(name="Step", description="Render every Nth frame", default=1, min=1)
    frames_per_task: IntProperty(
        name="Frames per task",
        description="Consecutive frames one Blender process renders (more saves start-up time, fewer spread wider)",
        default=1,
        min=1,
    )
    priority: IntProperty(name="Priority", description="Higher runs first", default=0)
    collect_dir: StringProperty(
        name="Collect to",
        description="Optional folder (on the node's machine) where the node writes the finished frames",
        default="",
        subtype="DIR_PATH",
    )

    # The last job submitted from this scene, as last polled.
    job_id: StringProperty(name="Job", default="")
    job_name: StringProperty(name="Job name", default="")
    job_status: StringProperty(name="Status", default="")
    frames_done: IntProperty(name="Frames done", default=0)
    frames_total: IntProperty(name="Frames", default=0)
    tasks_failed: IntProperty(name="Failed tasks", default=0)
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    message: StringProperty(name="Message", default="")


def frames_text(scene):
    """The frame range the job will have, as the API takes it (`A-B[:STEP]`)."""
    s = scene.renderswarm
    if s.use_scene_range:
        start, end, step = scene.frame_start, scene.frame_end, scene.frame_step
    else:
        start, end, step = s.frame_start, s.frame_end, s.frame_step
    return "%d-%d" % (start, end) if step == 1 else "%d-%d:%d" % (start, end, step)


def _show_job(settings, job):
    settings.job_id = job.get("id", "")
    settings.job_name = job.get("name", "")
    settings.job_status = job.get("status", "")
    settings.frames_done = int(job.get("frames_done", 0))
    settings.frames_total = int(job.get("frames_total", 0))
    settings.tasks_failed = int(job.get("tasks_failed", 0))
    total = settings.frames_total
    settings.progress = settings.frames_done / total if total else 0.0
    settings.message = ""


def status_line(settings):
    """What the panel says about the job, in one line."""
    if not settings.job_id:
        return ""
    line = "%s: %d/%d frames done" % (
        settings.job_status or "unknown",
        settings.frames_done,
        settings.frames_total,
    )
    if settings.tasks_failed:
        line += ", %d tasks failed" % settings.tasks_failed
    return line


def poll_job(scene, prefs=None):
    """Ask the node about the scene's job once and update what the panel
    shows. Returns True while the job is worth polling again."""
    settings = scene.renderswarm
    if not settings.job_id:
        return False
    prefs = prefs or _prefs()
    try:
        job = api_call(prefs, "GET", "/jobs/%s?tasks=false" % urllib.parse.quote(settings.job_id))
    except NodeError as e:
        settings.message = str(e)
        # A node that restarts comes back; a job it does not know, or a
        # token it refuses, does not fix itself.
        return e.status is None or e.status >= 500
    _show_job(settings, job)
    return settings.job_status not in FINAL


def _progress_timer():
    """The bpy.app.timers callback: poll every scene with a running job."""
    again = False
    try:
        prefs = _prefs()
        for scene in bpy.data.scenes:
            s = scene.renderswarm
            if s.job_id and s.job_status not in FINAL:
                again = poll_job(scene, prefs) or again
        _redraw()
    except Exception as e:  # never let a timer die with a traceback
        print("renderswarm: progress poll failed: %s" % e)
        return None
    return POLL_EVERY if again else None


def watch_progress():
    if not bpy.app.timers.is_registered(_progress_timer):
        bpy.app.timers.register(_progress_timer, first_interval=POLL_EVERY)


def draw_panel(layout, context):
    """The panel's body (a function, so it can be drawn without a UI)."""
    scene = context.scene
    s = scene.renderswarm
    prefs = _prefs(context)
    if prefs is not None:
        layout.prop(prefs, "api_url")

    layout.prop(s, "use_scene_range")
    col = layout.column(align=True)
    if s.use_scene_range:
        col.enabled = False
        col.label(text="Frames %s" % frames_text(scene))
    else:
        col.prop(s, "frame_start")
        col.prop(s, "frame_end")
        col.prop(s, "frame_step")
    layout.prop(s, "frames_per_task")
    layout.prop(s, "priority")
    layout.prop(s, "collect_dir")

    row = layout.row(align=True)
    row.operator(RENDERSWARM_OT_submit.bl_idname, icon="RENDER_ANIMATION")
    row.operator(RENDERSWARM_OT_open_page.bl_idname, icon="URL")

    if s.job_id or s.message:
        box = layout.box()
        if s.job_id:
            box.label(text="Job %s (%s)" % (s.job_id[:12], s.job_name), icon="RENDER_RESULT")
            box.label(text=status_line(s))
            bar = box.row()
            bar.enabled = False
            bar.prop(s, "progress", text="Progress", slider=True)
            box.operator(RENDERSWARM_OT_refresh.bl_idname, icon="FILE_REFRESH")
        if s.message:
            box.label(text=s.message, icon="ERROR")


class RENDERSWARM_PT_output(bpy.types.Panel):
    bl_label = "renderswarm"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "output"

    def draw(self, context):
        draw_panel(self.layout, context)


# ---------------------------------------------------------------------------
# Operators


def submit_request(scene, path):
    s = scene.renderswarm
    req = {
        "scene": path,
        "engine": "blender",
        "frames": frames_text(scene),
        "frames_per_task": s.frames_per_task,
        "priority": s.priority,
    }
    collect = s.collect_dir.strip()
    if collect:
        req["out"] = os.path.abspath(bpy.path.abspath(collect))
    return req


class RENDERSWARM_OT_submit(bpy.types.Operator):
    """Save this file and render it on the renderswarm farm"""

    bl_idname = "renderswarm.submit"
    bl_label = "Submit to renderswarm"

    def execute(self, context):
        scene = context.scene
        s = scene.renderswarm
        if not bpy.data.filepath:
            return self._refuse(
                s,
                "Save the .blend file first (File > Save As): "
                "the farm renders the saved file, not the open one",
            )
        if not s.use_scene_range and s.frame_end < s.frame_start:
            return self._refuse(s, "The frame range ends (%d) before it starts (%d)" % (s.frame_end, s.frame_start))
        try:
            bpy.ops.wm.save_mainfile()
        except RuntimeError as e:
            return self._refuse(s, "Could not save the file before submitting: %s" % e)
        path = os.path.realpath(bpy.path.abspath(bpy.data.filepath))
        try:
            job = api_call(_prefs(context), "POST", "/jobs", submit_request(scene, path), timeout=SUBMIT_TIMEOUT)
        except NodeError as e:
            return self._refuse(s, str(e))
        _show_job(s, job)
        self.report(
            {"INFO"},
            "renderswarm: job %s submitted, %d frames in %d tasks"
            % (s.job_id[:12], s.frames_total, int(job.get("tasks_total", 0))),
        )
        if s.job_status not in FINAL:
            watch_progress()
        _redraw()
        return {"FINISHED"}

    def _refuse(self, settings, message):
        settings.message = message
        self.report({"ERROR"}, message)
        return {"CANCELLED"}


class RENDERSWARM_OT_refresh(bpy.types.Operator):
    """Ask the node about the job now, and keep watching it while it runs"""

    bl_idname = "renderswarm.refresh"
    bl_label = "Refresh"

    def execute(self, context):
        s = context.scene.renderswarm
        if not s.job_id:
            self.report({"ERROR"}, "No job submitted from this scene yet")
            return {"CANCELLED"}
        if poll_job(context.scene, _prefs(context)):
            watch_progress()
        if s.message:
            self.report({"WARNING"}, s.message)
        _redraw()
        return {"FINISHED"}


class RENDERSWARM_OT_open_page(bpy.types.Operator):
    """Open the node's page in the web browser (at this scene's job, if any)"""

    bl_idname = "renderswarm.open_page"
    bl_label = "Open Page"

    def execute(self, context):
        url = _base_url(_prefs(context)) + "/"
        job = context.scene.renderswarm.job_id
        if job:
            url += "#job=" + job
        try:
            opened = webbrowser.open(url)
        except Exception as e:  # webbrowser raises for odd BROWSER settings
            opened, why = False, str(e)
        else:
            why = "no web browser was found"
        if not opened:
            self.report({"ERROR"}, "Could not open %s: %s" % (url, why))
            return {"CANCELLED"}
        self.report({"INFO"}, "Opened " + url)
        return {"FINISHED"}


CLASSES = (
    RenderswarmPreferences,
    RenderswarmSettings,
    RENDERSWARM_OT_submit,
    RENDERSWARM_OT_refresh,
    RENDERSWARM_OT_open_page,
    RENDERSWARM_PT_output,
)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.renderswarm = PointerProperty(type=RenderswarmSettings)


def unregister():
    if bpy.app.timers.is_registered(_progress_timer):
        bpy.app.timers.unregister(_progress_timer)
    del bpy.types.Scene.renderswarm
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)


if __name__ == "__main__":
    register()
