"""A simulated Canvas LMS served over real HTTP on loopback (docs/canvas-api.md describes what it honours).

from canvas_assets.sandbox import CanvasSandbox, SandboxConfig
with CanvasSandbox(SandboxConfig(scale="small", throttle="hosted")) as sb:
    requests.get(sb.api_url + "/courses", headers={"Authorization": f"Bearer {sb.token}"})
"""

from canvas_assets.sandbox.config import SCALES, SandboxConfig, ScalePreset
from canvas_assets.sandbox.data import ALL_BUT_DELETED, ENROLLMENT_STATES, ENROLLMENT_TYPES, SandboxData
from canvas_assets.sandbox.faults import FAULT_KINDS
from canvas_assets.sandbox.server import CanvasSandbox, serve_forever

__all__ = [
    "ALL_BUT_DELETED",
    "ENROLLMENT_STATES",
    "ENROLLMENT_TYPES",
    "FAULT_KINDS",
    "SCALES",
    "CanvasSandbox",
    "SandboxConfig",
    "SandboxData",
    "ScalePreset",
    "serve_forever",
]
