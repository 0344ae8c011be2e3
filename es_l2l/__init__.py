"""es-l2l: evolution strategies (and BPTT) meta-train LSNNs to learn to learn."""

__version__ = "0.1.0"
