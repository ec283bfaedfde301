"""Training machinery the reward models and the policy share: the loop, checkpoints, sharding,
compilation caches and meters."""
