"""Who said what: speaker labels (clinician / patient / other) for committed segments, offline.

- ``encoder``   resemblyzer's pretrained d-vector network (weights from its PyPI wheel), lazy.
- ``features``  its mel input and pause trimming, numpy only.
- ``tracker``   the pure online core: embeddings + text in, labels + revisions out.
- ``roles``     who is the clinician without enrolment (questions, plan, pronouns).
- ``stereo``    one speaker per channel: channel energy decides.
- ``profiles``  enrolled voice profiles, AES-GCM encrypted in the store; ``enroll`` builds them.
- ``diarizer``  the shell the server wires in (``OnlineDiarizer.add(segment, audio)``).
- ``settle``    holds segments until their labels are final (what the note drafter reads).
- ``scoring``/``bench``  attribution error and ``scribe bench speakers``; ``visitor`` builds
  three-voice cases from two-voice recordings.
"""

from .tracker import LabelUpdate, Observation, Revision, SpeakerTracker, TrackerConfig

__all__ = ["LabelUpdate", "Observation", "Revision", "SpeakerTracker", "TrackerConfig"]
