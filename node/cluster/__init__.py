"""The other nodes: chunk placement and transfer, peer health, the signed `/_cluster` API."""
