"""appliance: the software of a push-to-talk smart speaker on a Raspberry Pi."""

__version__ = "0.1.0"
