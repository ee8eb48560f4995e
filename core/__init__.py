"""Shared vocabulary of the decisioning system: channels, outcome events, the offer catalog,
domain errors, configuration loading and the workspace layout.

Every other package may import ``core``; ``core`` imports none of them.
"""
