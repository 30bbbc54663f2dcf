"""Latency/throughput and ANN benchmarks."""
