"""The shell's presentation and I/O: what a family's report and comparison hand back as data
(:class:`es_l2l.families.base.HeldOut`, :class:`es_l2l.tables.Comparison`) is printed and logged
here, the same way for every family. No family module prints or talks to MLflow."""

from es_l2l.reporting.comparison import log_comparison, print_comparison
from es_l2l.reporting.held_out import description, log_held_out, log_table, print_held_out

__all__ = ["description", "log_comparison", "log_held_out", "log_table", "print_comparison", "print_held_out"]
