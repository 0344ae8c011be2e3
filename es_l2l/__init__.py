"""es-l2l: evolution strategies (and BPTT) meta-train LSNNs to learn to learn."""

from es_l2l import moved_modules as _moved_modules

__version__ = "0.1.0"

_moved_modules.install()  # the module paths of earlier versions still import (es_l2l.moved_modules.MOVED)
