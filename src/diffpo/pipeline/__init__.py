"""The workflow's tooling: DVC mirror, code inputs, GPU slots, budgets, benchmarks."""
