"""Task families; each samples tasks from an explicit generator."""
