"""Store-recall: a working-memory task family (computing capability; Bellec et al. 2018, Fig. 3)."""
