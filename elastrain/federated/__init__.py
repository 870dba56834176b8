"""Federated training: rounds of clients that train on data they keep, aggregated by a strategy."""
