"""Widgets of the operator console, each owning one piece of the screen."""
