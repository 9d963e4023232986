"""The sandbox's demo page: TD's browser SDK on another origin, posting through the relay into Braze."""
