"""Reporting: what the shell prints and logs, the same way for every family.

``held_out`` and ``comparison`` print and log what a family's report and comparison hand back as
data (:class:`es_l2l.families.base.HeldOut`, :class:`es_l2l.reporting.tables.Comparison`); no
family module prints or talks to MLflow. ``tables`` (comparison rows, targets), ``plots``
(matplotlib without a display, rasters), ``stats`` (every interval under its statistic's name) and
``progress`` (the terminal's progress bar, a status-dict subscriber) serve them and the families.
"""
