"""The OpenAI-compatible writer against a local stand-in that speaks the real chat-completions
API (JSON and server-sent events): the note it writes, what the guard does with an invented
number, and clear errors for a failing, slow or unreachable endpoint."""

from __future__ import annotations

import pytest
from conftest import free_port
from openai_stub.server import StubState, start_stub
from notes_support import short_segments

from scribe.config import Settings
from scribe.notes.guard import check_note
from scribe.notes.templates import load_template
from scribe.notes.writers import WriterError, write_note, writer_from_settings
from scribe.notes.writers.lm import LMWriter
from scribe.notes.writers.openai import OpenAIChat


@pytest.fixture
async def stub():
    state = StubState()
    running = await start_stub(free_port(), state)
    yield running
    await running.runner.cleanup()


def _writer(base_url: str, *, stream: bool = True, timeout: float = 30.0, api_key: str | None = None) -> LMWriter:
    s = Settings()
    s.notes.openai.base_url = base_url
    s.notes.openai.model = "stub-model"
    s.notes.openai.stream = stream
    s.notes.openai.timeout = timeout
    if api_key:
        from pydantic import SecretStr

        s.notes.openai.api_key = SecretStr(api_key)
    w = writer_from_settings(s, "openai")
    assert isinstance(w, LMWriter) and w.name == "openai"
    return w


async def _draft(writer, segments=None):
    drafts = []
    note, stats = await write_note(
        writer, segments if segments is not None else short_segments(), encounter_id="enc-1",
        template=load_template("soap"), on_draft=drafts.append,
    )
    return note, stats, drafts


@pytest.mark.parametrize("stream", [True, False])
async def test_note_from_endpoint_every_sentence_linked_and_unflagged(stub, stream):
    note, stats, drafts = await _draft(_writer(stub.base_url, stream=stream))
    assert note.writer == "openai"
    texts = [s.text for s in note.sentences()]
    # the stand-in's rephrasing is what the note says, not the extractive wording
    assert any(t.startswith("The patient") for t in texts), texts
    assert stats.lm_sentences > 0 and stats.calls == len(stub.state.requests)
    assert all(s.evidence for s in note.sentences())
    assert note.open_flags == []
    # the lisinopril dose and the benzonatate start survive the rephrasing
    joined = " ".join(texts).lower()
    assert "lisinopril 10 mg" in joined and "benzonatate 100 mg" in joined
    # what was sent: the real request shape, statements cited by segment id, the stream flag honoured
    req = stub.state.requests[0]
    assert req["model"] == "stub-model" and req["stream"] is stream
    assert [m["role"] for m in req["messages"]] == ["system", "user"]
    assert "[seg-00001]" in req["messages"][1]["content"]
    assert stats.completion_tokens > 0
    # a streaming writer shows the note growing: more than the first and the last draft
    assert len(drafts) > 2
    assert drafts[-1] == note


async def test_invented_number_is_not_in_the_note(stub):
    stub.state.mode = "invent"
    note, stats, _ = await _draft(_writer(stub.base_url))
    joined = " ".join(s.text for s in note.sentences())
    assert "130/80" not in joined
    assert stats.repaired >= 1
    assert all(s.evidence for s in note.sentences())
    # the note passes the guard as a whole, re-checked from scratch
    assert check_note(note, short_segments()).open_flags == []


async def test_server_error_is_a_clear_writer_error(stub):
    stub.state.mode = "error"
    with pytest.raises(WriterError, match=r"HTTP 500: model overloaded"):
        await _draft(_writer(stub.base_url))


async def test_error_event_mid_stream_is_a_clear_writer_error(stub):
    stub.state.mode = "midstream_error"
    with pytest.raises(WriterError, match="reported an error: generation failed"):
        await _draft(_writer(stub.base_url))


async def test_timeout_names_the_limit(stub):
    stub.state.mode = "slow"
    stub.state.delay = 5.0
    with pytest.raises(WriterError, match=r"did not finish within 0.5 s"):
        await _draft(_writer(stub.base_url, timeout=0.5))


async def test_unreachable_endpoint():
    with pytest.raises(WriterError, match="cannot reach the note model endpoint"):
        await _draft(_writer(f"http://127.0.0.1:{free_port()}/v1"))


async def test_api_key_is_sent_and_a_refusal_is_reported(stub):
    stub.state.api_key = "sk-local-123"
    note, _, _ = await _draft(_writer(stub.base_url, api_key="sk-local-123"))
    assert note.sentences()
    with pytest.raises(WriterError, match="HTTP 401: Incorrect API key"):
        await _draft(_writer(stub.base_url, api_key="wrong"))


async def test_error_messages_carry_no_transcript_text(stub):
    stub.state.mode = "error"
    with pytest.raises(WriterError) as exc:
        await _draft(_writer(stub.base_url))
    assert "lisinopril" not in str(exc.value) and "cough" not in str(exc.value)


async def test_incremental_equals_one_shot(stub):
    """Segments added one by one during the visit, or all at stop: the same note."""
    writer = _writer(stub.base_url)
    template = load_template("soap")
    one_shot, _, _ = await _draft(writer)
    session = writer.start("enc-1", template)
    partials = [session.add(s) for s in short_segments()]
    assert len(partials[-1].sentences()) > len(partials[1].sentences())
    final = None
    async for final in session.finish():
        pass
    strip = lambda n: n.model_dump(exclude={"created_at"})
    assert strip(final) == strip(one_shot)


async def test_empty_transcript_makes_no_call(stub):
    note, stats, _ = await _draft(_writer(stub.base_url), segments=[])
    assert note.sentences() == [] and [s.key for s in note.sections] == ["subjective", "objective", "assessment", "plan"]
    assert stub.state.requests == [] and stats.calls == 0


def test_chat_client_url_building():
    assert OpenAIChat("http://h:1/v1/", "m").url == "http://h:1/v1/chat/completions"
