"""`python -m seqbench`: the `seqbench` command, for an environment that has the package on its
path but not the console script (a checkout on PYTHONPATH, a container without an install)."""

from seqbench.harness.cli import main

main()
