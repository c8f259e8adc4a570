"""The console's views (screens) and its modal questions."""
