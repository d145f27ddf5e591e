"""The fuzzing harness behind `scripts/fuzz`: generated requests and Raft frames
against real nodes, and the checks that they survived them."""
