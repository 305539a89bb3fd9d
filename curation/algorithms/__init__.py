"""Pure algorithms on numpy/torch arrays: hashing, graphs, k-NN, clustering."""
