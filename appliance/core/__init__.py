"""The pure core of the appliance: the turn-taking state machine. No I/O, no threads, no clocks."""
