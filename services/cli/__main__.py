"""`python -m services.cli`: the same as the `songpop` script."""

from services.cli import main

main()
