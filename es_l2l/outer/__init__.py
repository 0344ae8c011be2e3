"""Outer loops: they tune the LSNN across tasks and emit one status dict per generation."""
