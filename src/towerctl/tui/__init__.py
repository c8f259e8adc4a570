"""The operator console: a Textual app that is an operator client of the hub.

Importing this package is cheap; ``towerctl.tui.app`` pulls in Textual.
"""
