"""Trust building blocks: consent, audit trail, encryption at rest, access tokens, rate limits.

Each module is self-contained with a small API so the server and store can wire it in:

- ``audit``      append-only, hash-chained audit log (``AuditLog``) in the store
- ``anchor``     the audit head kept outside the database, signed (``AnchorKeeper`` for the service)
- ``crypto``     AES-GCM envelopes bound to (table, column, row), key rotation over the
                 encrypted columns it is given (``Keyring``, ``EncryptedColumn``, ``rotate``); each
                 schema declares its own columns, ``scribe/database.py`` collects them
- ``at_rest``    ``open_keyed_store(settings, columns)``: the store with its data key, checked at open, in a
                 private (0700) data directory, its audit log anchored
- ``tokens``     per-clinician API tokens stored hashed, roles, encounter scoping (``TokenStore``)
- ``consent``    the consent gate, consent withdrawal and retention purges
- ``ratelimit``  a token-bucket limiter per principal or address
- ``cli``        ``scribe audit|keys|tokens|purge``
- ``ports``      what this package needs of the store, as protocols (it cannot import ``scribe.store``)

Nothing here logs or stores PHI: audit entries carry ids and codes only, and ``audit``
refuses free text in an entry's details.
"""
