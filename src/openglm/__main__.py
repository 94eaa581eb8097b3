"""`python -m openglm`: the `openglm` command."""

from openglm.cli import main

main()
