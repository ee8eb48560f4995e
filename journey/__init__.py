"""The simulated journey: drives the decision loop against the simulated world, day by day."""
