"""Built-in placements, one family per file; registered as ``normlight.placements`` entry points."""
