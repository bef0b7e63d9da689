"""The link to the Realtime API: one WebSocket session, and the supervisor that keeps one alive."""
