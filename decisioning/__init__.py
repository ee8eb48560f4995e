"""The ``decisioning`` command line: one subcommand per step of the loop (DESIGN section 8).

Each subcommand lives in ``decisioning/commands/<name>.py`` and is imported only when it runs, so
``decisioning --help`` stays fast whatever the heavy libraries cost to import.
"""
