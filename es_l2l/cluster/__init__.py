"""The Ray cluster: ``evaluators`` (starting or attaching to Ray, the elastic pool of evaluation
actors, the in-process evaluator), ``seed_traffic`` (what travels to the actors: seeds and
recipes, not genomes), ``submit`` (``es-l2l submit``: Ray Jobs), ``preflight`` (CPUs, tokens and
the attach address checked before the actors start).
"""
