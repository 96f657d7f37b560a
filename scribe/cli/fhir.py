"""``scribe outbox list|show|retry``, ``scribe deliver`` and ``scribe bench fhir``.

Thin shells over ``scribe.fhir.outbox``; heavy work and imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import UTC
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("outbox", help="signed notes waiting for (or done with) delivery to the EHR",
                       description="Inspect and requeue deliveries of signed notes.")
    osub = p.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    q = osub.add_parser("list", help="list deliveries (newest last)")
    q.add_argument("--encounter", help="only this encounter")
    q.add_argument("--state", choices=["queued", "in_flight", "delivered", "failed"], help="only this state")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_outbox_list)
    q = osub.add_parser("show", help="one delivery with its ledger")
    q.add_argument("id", help="delivery id (dlv-…)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_outbox_show)
    q = osub.add_parser("retry", help="requeue a failed delivery now (after fixing its cause)")
    q.add_argument("id", help="delivery id (dlv-…)")
    q.set_defaults(func=cmd_outbox_retry)

    p = sub.add_parser("deliver", help="deliver queued signed notes now",
                       description="Run the outbox worker: deliver every due note to the configured target "
                                   "(the EHR at fhir.base_url, else FHIR JSON files under fhir.out_dir) and wait "
                                   "out retries until nothing is pending (or --max-wait).")
    p.add_argument("--once", action="store_true", help="one pass over what is due now; do not wait for retries")
    p.add_argument("--max-wait", type=float, default=300.0, help="longest time to wait for retries (default 300 s)")
    p.set_defaults(func=cmd_deliver)


def register_bench(bench_sub: Any) -> None:
    b = bench_sub.add_parser("fhir", help="sign → 201 latency and deliveries/s through the outbox",
                             description="Sign notes into a temporary store and deliver them through the outbox "
                                         "to the FHIR server at --base-url: prints sign-to-"
                                         "201 latency p50/p95 (one at a time) and deliveries per second (a batch, at "
                                         "several worker concurrencies).")
    b.add_argument("-n", "--notes", type=int, default=200, help="notes in each throughput batch (default 200)")
    b.add_argument("--latency-notes", type=int, default=100, help="notes for the latency run (default 100)")
    b.add_argument("--concurrency", default="1,4,8", help="worker concurrencies to try (default 1,4,8)")
    b.add_argument("--base-url", help="the FHIR R4 server to deliver to (no auth); scripts/bench_fhir.py starts "
                                      "the local test server and passes it")
    b.add_argument("--json", dest="json_out", help="also write the results as JSON here")
    b.set_defaults(func=cmd_bench_fhir)


# --------------------------------------------------------------------------- helpers


def _open(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from .common import UserError, settings_from_args
    from scribe.fhir.outbox import Outbox
    from scribe.store import StoreError
    from scribe.database import open_store

    settings = settings_from_args(args)
    try:
        store = open_store(settings)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    try:
        outbox = Outbox(store, settings=settings)
    except ValueError as exc:
        store.close()
        raise UserError(str(exc)) from None
    return settings, store, outbox


def _fmt_dt(dt: Any) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S") if dt else "-"


# --------------------------------------------------------------------------- commands


def cmd_outbox_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .common import console

    _, store, outbox = _open(args)
    try:
        rows = outbox.deliveries(args.encounter, state=args.state)
    finally:
        store.close()
    if args.json:
        console.print_json(json.dumps([d.model_dump(mode="json") for d in rows]))
        return 0
    if not rows:
        console.print("no deliveries")
        return 0
    table = Table("id", "encounter", "v", "action", "target", "state", "tries", "next / done", "resource / error")
    colour = {"queued": "yellow", "in_flight": "cyan", "delivered": "green", "failed": "red"}
    for d in rows:
        when = d.updated_at if d.state.value in ("delivered", "failed") else d.next_attempt_at
        info = d.resource_id or "" if d.state.value == "delivered" else (d.error or "")
        table.add_row(d.id, d.encounter_id, str(d.version or ""), d.action, d.target,
                      f"[{colour[d.state.value]}]{d.state.value}[/]", str(d.attempts), _fmt_dt(when),
                      info[:80])
    console.print(table)
    return 0


def cmd_outbox_show(args: argparse.Namespace) -> int:
    from .common import UserError, console

    _, store, outbox = _open(args)
    try:
        d = outbox.delivery(args.id)
        if d is None:
            raise UserError(f"no delivery {args.id}; see 'scribe outbox list'")
        ledger = outbox.ledger(args.id)
    finally:
        store.close()
    if args.json:
        data = d.model_dump(mode="json")
        data["ledger"] = [{"at": e.at.isoformat(), "event": e.event, "detail": e.detail} for e in ledger]
        console.print_json(json.dumps(data))
        return 0
    for key in ("id", "encounter_id", "signature_id", "version", "action", "target", "state", "attempts",
                "next_attempt_at", "resource_id", "location", "error", "created_at", "updated_at"):
        console.print(f"[bold]{key}[/]: {getattr(d, key)}")
    console.print("[bold]ledger[/]:")
    for e in ledger:
        console.print(f"  {_fmt_dt(e.at)}  {e.event}" + (f"  {e.detail}" if e.detail else ""))
    return 0


def cmd_outbox_retry(args: argparse.Namespace) -> int:
    from .common import UserError, console
    from scribe.fhir.outbox import OutboxError

    _, store, outbox = _open(args)
    try:
        d = outbox.retry(args.id)
    except OutboxError as exc:
        raise UserError(str(exc)) from None
    finally:
        store.close()
    console.print(f"{d.id} queued; run 'scribe deliver' (or let the service's worker pick it up)")
    return 0


def cmd_deliver(args: argparse.Namespace) -> int:
    from .common import UserError, console, err
    from scribe.fhir.outbox import OutboxWorker
    from scribe.fhir.smart import SmartAuthError

    settings, store, outbox = _open(args)

    def show(d: Any) -> None:
        if d.state.value in ("delivered", "failed") or d.error:
            msg = d.resource_id or "" if d.state.value == "delivered" else (d.error or "")
            err.print(f"{d.id} {d.encounter_id} v{d.version} {d.target}: {d.state.value} {msg}")

    async def main() -> int:
        try:
            worker = OutboxWorker.from_settings(outbox, settings, on_event=show)
        except (ValueError, SmartAuthError) as exc:
            raise UserError(f"FHIR delivery is misconfigured: {exc}") from None
        try:
            if args.once:
                return await worker.run_once()
            return await worker.run_until_idle(max_wait_s=args.max_wait)
        finally:
            await worker.aclose()

    try:
        n = asyncio.run(main())
        pending, failed = outbox.pending_count(), len(outbox.deliveries(state="failed"))
    finally:
        store.close()
    console.print(f"processed {n} deliveries; {pending} still pending, {failed} failed")
    return 0 if failed == 0 else 1


# --------------------------------------------------------------------------- bench


def _bench_note(eid: str, i: int) -> Any:
    from scribe.models import Evidence, Note, Section, Sentence

    text = f"Patient reports a dry cough for {i % 9 + 2} days without fever."
    return Note(encounter_id=eid, sections=[
        Section(key="subjective", title="Subjective", sentences=[
            Sentence(id="s1", text=text, evidence=[Evidence(segment_id="seg-00000", start=0.0, end=3.0, quote=text)])]),
        Section(key="plan", title="Plan", sentences=[Sentence(id="s2", text="Fluids and rest; review in one week.",
                                                              clinician_authored=True)]),
    ])


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


async def _bench(base_url: str, args: argparse.Namespace, tmp: Path, server: Any = None) -> dict[str, Any]:
    """``server``: the local test server's handle, to start each run from an empty repository
    (its conditional-create search is a scan, so a fuller server would bias later runs) and to
    count what it stored (exactly once: one DocumentReference per signed note)."""
    from datetime import datetime

    from scribe.fhir.client import FhirClient
    from scribe.fhir.outbox import Outbox, OutboxWorker
    from scribe.fhir.targets import FhirTarget
    from scribe.store import Store

    results: dict[str, Any] = {"base_url": base_url}
    store = Store(tmp / "bench.db")
    outbox = Outbox(store, targets=("fhir",))
    client = FhirClient(base_url)
    target = FhirTarget(client)
    start = datetime.now(UTC)
    run_id = f"{int(time.time())}"

    def prepare(eid: str) -> None:
        outbox.set_context(eid, patient="Patient/bench-p1", encounter="Encounter/bench-e1",
                           practitioner="Practitioner/bench-dr", period_start=start)

    try:
        # Latency: one note at a time, sign → worker → 201 recorded.
        worker = OutboxWorker(outbox, {"fhir": target}, concurrency=1)
        lat: list[float] = []
        for i in range(args.latency_notes + 3):
            eid = f"bench-lat-{run_id}-{i}"
            prepare(eid)
            t0 = time.perf_counter()
            outbox.sign(_bench_note(eid, i), "bench-dr")
            await worker.run_once()
            t1 = time.perf_counter()
            if i >= 3:  # warm-up: connection pool, JIT on the server
                lat.append(t1 - t0)
        results["latency_ms"] = {"n": len(lat), "p50": _pct(lat, 0.5) * 1000, "p95": _pct(lat, 0.95) * 1000,
                                 "mean": statistics.fmean(lat) * 1000}
        # Throughput: a batch signed up front, then drained.
        if server is not None:
            results["latency_server_documents"] = server.counts().get("DocumentReference", 0)
        results["throughput"] = []
        for conc in [int(c) for c in args.concurrency.split(",") if c.strip()]:
            if server is not None:
                server.reset()
            worker = OutboxWorker(outbox, {"fhir": target}, concurrency=conc)
            ts = time.perf_counter()
            for i in range(args.notes):
                eid = f"bench-tp{conc}-{run_id}-{i}"
                prepare(eid)
                outbox.sign(_bench_note(eid, i), "bench-dr")
            sign_s = time.perf_counter() - ts
            t0 = time.perf_counter()
            n = await worker.run_until_idle(max_wait_s=600)
            dt = time.perf_counter() - t0
            failed = len(outbox.deliveries(state="failed"))
            row = {"concurrency": conc, "notes": args.notes, "delivered": n - failed, "failed": failed,
                   "seconds": dt, "deliveries_per_s": n / dt, "signs_per_s": args.notes / sign_s}
            if server is not None:
                row["server_documents"] = server.counts().get("DocumentReference", 0)
            results["throughput"].append(row)
    finally:
        await target.aclose()
        store.close()
    return results


def cmd_bench_fhir(args: argparse.Namespace, server: Any = None) -> int:
    """``server``: a local test server's handle (``scripts/bench_fhir.py`` starts Medplum's engine
    from ``tests/fhir_server`` and passes it), to empty it between runs and count what it stored."""
    import os
    import platform
    import tempfile

    from .common import UserError, console

    base_url = args.base_url or (server.base_url if server is not None else None)
    if not base_url:
        raise UserError("the FHIR bench needs a FHIR R4 server: pass --base-url URL (no auth), or run "
                        "'python scripts/bench_fhir.py' in a source checkout to start the local test server")
    with tempfile.TemporaryDirectory(prefix="scribe-bench-fhir-") as tmp:
        results = asyncio.run(_bench(base_url, args, Path(tmp), server))
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    lat = results["latency_ms"]
    console.print(f"[bold]sign → 201[/] (n={lat['n']}, one at a time): p50 {lat['p50']:.1f} ms, "
                  f"p95 {lat['p95']:.1f} ms, mean {lat['mean']:.1f} ms")
    for row in results["throughput"]:
        console.print(f"[bold]throughput[/] concurrency {row['concurrency']}: {row['deliveries_per_s']:.1f} "
                      f"deliveries/s ({row['delivered']} delivered, {row['failed']} failed, {row['seconds']:.2f} s; "
                      f"signing {row['signs_per_s']:.0f}/s)"
                      + (f"; server stored {row['server_documents']}" if "server_documents" in row else ""))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0
