"""`python -m ipt_edge` runs the `ipt-edge` command."""

from ipt_edge.cli import main

main()
