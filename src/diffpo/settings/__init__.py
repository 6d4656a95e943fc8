"""params.yaml: loading, validation, experiments, tuning grids, what each stage reads."""
