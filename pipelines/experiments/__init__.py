"""Experiments built on the library: the miniature world and the method check. Imported by nobody in the library."""
