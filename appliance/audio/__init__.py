"""Audio helpers: WAV file I/O and sample-rate conversion for the Realtime API's 24 kHz PCM16.

Submodules are imported explicitly (``from appliance.audio.resample import StreamResampler``);
nothing is re-exported here so that importing the package stays cheap and free of side effects.
"""
