"""Model kinds beside the LSNN (es_l2l.snn): population-batched, pure functions of named parameter tensors."""
