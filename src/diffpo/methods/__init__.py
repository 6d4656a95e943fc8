"""What the methods optimise: objectives and rollouts."""
