"""``python -m towerctl.cli`` runs the CLI (what the tests launch)."""

from towerctl.cli import main

main()
