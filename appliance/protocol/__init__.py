"""The Realtime protocol edge: client events built as dicts, server frames parsed into typed events.

Pure code: no sockets, no threads, no clocks. Everything past this package sees typed events
(``server_events``), never raw dicts.
"""
