"""Preference data: reading shards, preparing pairs, the encoded cache."""
