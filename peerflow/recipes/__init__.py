"""Ready-made workflow pieces for the paper's workloads, named from YAML configs."""
