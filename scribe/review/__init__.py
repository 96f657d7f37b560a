"""Review and sign-off: the library behind the review API a clinician's review app talks to.

``edits`` holds the pure rules (what an edit does to evidence and flags, what resolving a flag
means, which review state an encounter is in); ``service`` applies them to the store in one
transaction with an audit record per change; ``events`` feeds live updates to clients as
server-sent events. The HTTP handlers are ``scribe/service/review_api.py``. The Textual app
itself lives in ``tui/`` and only speaks HTTP to that API, so a clinician can review from
another machine.
"""
