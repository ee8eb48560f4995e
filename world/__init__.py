"""The simulated customer world: persons with known latent traits, the raw sources a CDP would
export about them (with identity fragments and dirt), and the response function that answers any
decision with outcomes and their true probabilities. See world/README.md."""

from world.config import Shift, WorldConfig
from world.response import ActionBatch, ContactState, Outcomes, ResponseProbabilities
from world.world import History, SimulationSummary, World

__all__ = ["ActionBatch", "ContactState", "History", "Outcomes", "ResponseProbabilities", "Shift",
           "SimulationSummary", "World", "WorldConfig"]
