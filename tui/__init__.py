"""The Textual review app (issue 5). Not built yet: it will talk to the service's HTTP API
and websocket events only, never to the store directly."""
