"""Realtime tests: real WebSocket clients (``websockets``) against the app on a live uvicorn server.

Their helpers (``ws_connect``, ``receive_event``, ``wait_closed_with``...) are in ``tests.helpers``.
"""
