"""An OpenAI-compatible model simulator that stands in for GPU model servers."""

from smesh.sim.app import make_app, sim_state
from smesh.sim.cli import main
from smesh.sim.server import serve
from smesh.sim.settings import SimSettings

__all__ = ["SimSettings", "main", "make_app", "serve", "sim_state"]
