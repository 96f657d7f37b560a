"""The short visit written for the note tests (notes/, cli/, trust/, notes/writers/): a cough and
sore throat, with a current medication, vitals, an exam, an assessment and a plan."""

from __future__ import annotations

from scribe.models import Segment, Speaker
from scribe.notes.dialogue import segments_from_turns

SHORT = [
    ("doctor", "Hi, what brings you in today?"),
    ("patient", "I've had a bad cough and a sore throat for three days."),
    ("doctor", "Any fever or chills?"),
    ("patient", "No."),
    ("doctor", "Any shortness of breath?"),
    ("patient", "Yes, a little when I climb stairs."),
    ("doctor", "Are you taking any medications?"),
    ("patient", "I take lisinopril 10 mg once a day for my blood pressure."),
    ("doctor", "Okay. Your temperature is 98.6 and your oxygen saturation is 97 percent."),
    ("doctor", "On exam your lungs are clear and your throat is red."),
    ("doctor", "I think this is a viral upper respiratory infection."),
    ("doctor", "I want you to start benzonatate 100 mg three times a day as needed for the cough."),
    ("doctor", "Continue the lisinopril 10 mg daily. Come back if you get worse, okay?"),
    ("patient", "Okay, thank you."),
]


def short_segments(keep_speakers: bool = True) -> list[Segment]:
    return segments_from_turns([{"speaker": s, "text": t} for s, t in SHORT], keep_speakers=keep_speakers)


def qa_visit(answer: Speaker) -> list[Segment]:
    """A question answered only by "yes, sometimes": whether that is an answer (a symptom
    reported) depends on who said it, so a visit for label-revision tests."""
    said = [("clinician", "Do you have any chest pain?"), (answer.value, "Yes, sometimes when I climb stairs."),
            ("clinician", "Any shortness of breath?"), ("patient", "No, none at all."),
            ("clinician", "I think this is angina. We will order a stress test.")]
    return [Segment(id=Segment.make_id(i), index=i, start=float(i), end=i + 0.9, text=t, speaker=Speaker(sp))
            for i, (sp, t) in enumerate(said)]
