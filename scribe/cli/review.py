"""``scribe review``: open the review app against a running service (lazy Textual import).

In a terminal it opens the app; without one (CI, a pipe) it prints the encounter list as text
and exits, so scripts and CI never hang on an interactive screen.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "review",
        help="review, edit and sign notes in the terminal app",
        description="Open the keyboard-first review app: the day's encounters, the transcript, the draft with its "
                    "evidence and flags, signing and delivery to the EHR. Talks to the service over HTTP, so it "
                    "works from another machine. Without a terminal it prints the encounter list instead.",
    )
    p.add_argument("--url", default=os.environ.get("SCRIBE_URL", "http://127.0.0.1:8765"),
                   help="service URL, http://host:port or the ws:// stream URL (env SCRIBE_URL)")
    p.add_argument("--token", help="API token (env SCRIBE_TOKEN)")
    p.add_argument("--clinician", default=os.environ.get("SCRIBE_CLINICIAN") or os.environ.get("USER") or "clinician",
                   help="who is reviewing and signing (recorded with every change; env SCRIBE_CLINICIAN)")
    p.add_argument("--encounter", help="open this encounter directly")
    p.add_argument("--state", choices=["recording", "drafting", "draft_ready", "signed", "delivered", "failed"],
                   help="with --list: only encounters in this state")
    p.add_argument("--list", action="store_true", help="print the encounter list and exit (no app)")
    p.set_defaults(func=cmd_review)


def _token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get("SCRIBE_TOKEN")


def cmd_review(args: argparse.Namespace) -> int:
    from .common import UserError

    try:
        from tui.client import ApiError, ReviewClient
    except ImportError as exc:  # the tui package ships with scribe; a broken install says so
        raise UserError(f"the review app is not installed ({exc}); reinstall scribe") from None
    try:
        client = ReviewClient(args.url, _token(args), args.clinician)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not os.environ.get("CI")
    if args.list or not interactive:
        try:
            return asyncio.run(_print_list(client, args.state))
        except ApiError as exc:
            raise UserError(str(exc)) from None
    try:
        asyncio.run(_check(client))
    except ApiError as exc:
        raise UserError(str(exc)) from None
    from tui.app import ReviewApp

    ReviewApp(ReviewClient(args.url, _token(args), args.clinician), encounter_id=args.encounter).run()
    return 0


async def _check(client) -> None:
    """Fail fast, in the shell, on a wrong URL or token (instead of inside the app)."""
    try:
        await client.list_encounters()
    finally:
        await client.close()


async def _print_list(client, state: str | None) -> int:
    from rich.table import Table

    from .common import console
    from scribe.review.models import ReviewState

    try:
        data = await client.list_encounters(ReviewState(state) if state else None)
    finally:
        await client.close()
    console.print("  ".join(f"{s.label}: {n}" for s, n in data.counts.items()))
    table = Table(show_edge=False, box=None, header_style="bold")
    for col in ("encounter", "patient", "state", "started", "open flags", "sentences"):
        table.add_column(col, no_wrap=True)
    for e in data.encounters:
        table.add_row(e.id, e.patient_ref, e.state.label, e.created_at.astimezone().strftime("%Y-%m-%d %H:%M"),
                      str(e.open_flags), str(e.sentences))
    console.print(table)
    return 0
