"""``python -m api`` runs the ``sieve`` command line."""

from api.cli import main

main()
