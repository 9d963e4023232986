"""A Braze REST API simulator served over real HTTP on loopback, for tests, benchmarks and sandbox mode."""

from braze_sim.config import DEFAULT_API_KEY, Faults, SimConfig, parse_limit
from braze_sim.server import Simulator
from braze_sim.state import BrazeState

__all__ = ["DEFAULT_API_KEY", "BrazeState", "Faults", "SimConfig", "Simulator", "parse_limit"]
