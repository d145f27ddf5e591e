"""A local Flotilla cluster for one machine: `scripts/cluster` runs it in the foreground.

`layout` says where each node listens and keeps its data, `lifecycle` decides
what happens when a node exits (pure, no processes), `output` copies a node's
output to the console and its log file, `supervisor` runs the nodes under one
trio nursery, `control` is the Unix-socket protocol another terminal uses to
stop, kill and start single nodes, and `commands` is the command line.
"""
