"""Review and sign-off: the HTTP API a clinician's review app talks to, and its pure core.

``edits`` holds the pure rules (what an edit does to evidence and flags, what resolving a flag
means, which review state an encounter is in); ``service`` applies them to the store in one
transaction with an audit record per change; ``api`` is the aiohttp shell; ``events`` feeds
live updates to clients as server-sent events. The Textual app itself lives in ``tui/`` and
only speaks HTTP to this API, so a clinician can review from another machine.
"""
