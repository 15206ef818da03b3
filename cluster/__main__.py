"""`python -m cluster`: the same as the `swarm` command."""

from cluster._private.cli import main

if __name__ == "__main__":
    main()
