"""The run directories: config -> plan -> groups -> files, for measuring and for training."""
