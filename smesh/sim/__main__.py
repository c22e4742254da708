"""``python -m smesh.sim``: the simulator's command line."""

from smesh.sim.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
