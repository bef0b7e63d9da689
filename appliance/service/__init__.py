"""How the appliance lives under systemd: sd_notify + watchdog, and logging to the journal.

:mod:`appliance.service.notify` tells systemd the daemon is ready, what it is doing and that its
event loop is alive; :mod:`appliance.service.journal` sends the log and both sides of the
conversation to journald as structured entries. Both are no-ops (or plain stderr) outside
systemd, so the same daemon runs in a terminal unchanged.
"""
