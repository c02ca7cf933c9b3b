"""Select: hits and signals to segments (scores, merge, dedup, query-free events, budget)."""
