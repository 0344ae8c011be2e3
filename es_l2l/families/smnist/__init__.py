"""Sequential MNIST: digits shown pixel by pixel as threshold-crossing spikes (computing capability)."""
