"""The Textual review app: ``scribe review``.

It reads and writes only through the review HTTP API (``tui.client``), so a clinician can
review from another machine. Nothing here touches the store.
"""
