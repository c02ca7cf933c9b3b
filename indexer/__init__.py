"""Video indexing: probe, proxy decode, shots, slices, embeddings, vector stores."""
