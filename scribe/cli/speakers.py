"""``scribe enroll`` and ``scribe bench speakers``."""

from __future__ import annotations

import argparse


def _repo(settings):
    from .common import UserError
    from ..store import StoreError
    from ..database import open_store
    from ..diarize.profiles import ProfileError, ProfileRepository, legacy_key

    try:
        return ProfileRepository(open_store(settings), legacy_key(settings))
    except (ProfileError, StoreError) as exc:
        raise UserError(str(exc)) from None


def _record_mic(seconds: float):
    import numpy as np

    from ..audio import AudioError
    from .common import UserError, err

    try:
        import sounddevice as sd
    except OSError as exc:  # libportaudio2 missing
        raise UserError(f"cannot use the microphone ({exc}); pass an audio FILE instead") from None
    err.print(f"recording {seconds:.0f} s — speak naturally (read a paragraph aloud)…")
    try:
        data = sd.rec(int(seconds * 16000), samplerate=16000, channels=1, dtype="float32")
        sd.wait()
    except Exception as exc:  # noqa: BLE001 — PortAudio raises its own types
        raise UserError(f"cannot record from the microphone: {exc}") from None
    if data is None:
        raise AudioError("no audio recorded")
    return np.asarray(data, dtype=np.float32).reshape(-1)


def cmd_enroll(args: argparse.Namespace) -> int:
    from .common import UserError, console, settings_from_args

    settings = settings_from_args(args)
    if args.delete:
        repo = _repo(settings)
        if not repo.delete(args.delete):
            raise UserError(f"no voice profile is stored for {args.delete}")
        console.print(f"voice profile of {args.delete} deleted")
        return 0
    if not args.clinician:
        raise UserError("pass --clinician ID with an audio FILE or --mic (or --delete ID)")
    if bool(args.file) == bool(args.mic):
        raise UserError("pass exactly one of an audio FILE or --mic")
    from ..audio import AudioError, load_audio
    from ..diarize.encoder import EncoderMissing, load_encoder
    from ..diarize.enroll import EnrolmentError, build_profile

    try:
        audio = load_audio(args.file) if args.file else _record_mic(args.seconds)
        profile = build_profile(load_encoder(), args.clinician, audio)
    except (AudioError, EnrolmentError, EncoderMissing) as exc:
        raise UserError(str(exc)) from None
    _repo(settings).save(profile)
    console.print(f"voice profile of {args.clinician} stored encrypted ({profile.speech_seconds:.0f} s of speech, "
                  f"{profile.windows} windows, {profile.model})")
    return 0


def cmd_bench_speakers(args: argparse.Namespace) -> int:
    from ..bench.speakers import run_speakers_bench
    from ..diarize.encoder import EncoderMissing
    from .common import UserError, console, recognizer_from_settings, settings_from_args

    settings = settings_from_args(args)
    try:
        return run_speakers_bench(args, settings, lambda: recognizer_from_settings(settings), console=console)
    except EncoderMissing as exc:
        raise UserError(str(exc)) from None


def register(sub) -> None:
    p = sub.add_parser(
        "enroll", help="enrol (or delete) a clinician's voice profile for speaker labels",
        description="Store a clinician's voice profile (from ~30 s of them speaking alone) so their segments are "
                    "labelled 'clinician' reliably. The profile is biometric data: it is stored encrypted "
                    "(AES-GCM; key from SCRIBE_SPEAKERS__KEY or a 0600 key file) and --delete removes it.")
    p.add_argument("file", nargs="?", help="audio file of the clinician speaking (wav, flac, ogg, mp3)")
    p.add_argument("--clinician", metavar="ID", help="clinician id to enrol")
    p.add_argument("--mic", action="store_true", help="record from the microphone instead of a file")
    p.add_argument("--seconds", type=float, default=30.0, help="microphone recording length (default 30)")
    p.add_argument("--delete", metavar="ID", help="delete the stored voice profile of this clinician")
    p.set_defaults(func=cmd_enroll)


def register_bench(bench_sub) -> None:
    p = bench_sub.add_parser(
        "speakers", help="speaker attribution error with and without enrolment, and its compute",
        description="Transcribe evaluation dialogues with the streaming path, label speakers online and print the "
                    "share of words attributed to the wrong role (without enrolment, as the stream left the labels and "
                    "re-decided with hindsight as the transcript of record is; on held-out audio with and without a "
                    "clinician profile built from earlier audio; on harder cases rebuilt from the recordings), worst "
                    "first, plus CPU seconds per audio second.")
    p.add_argument("files", nargs="*", help="audio files with a .json manifest beside them "
                                             "(default: the synthetic dialogue and the OSCE recordings)")
    p.add_argument("--max-seconds", type=float, default=0, help="use only the first N seconds of each file")
    p.add_argument("--no-enrol", action="store_true", help="skip the enrolment comparison")
    p.add_argument("--no-visitor", action="store_true",
                   help="skip the constructed three-voice cases (a visitor spliced into each real recording)")
    p.add_argument("--no-harder", action="store_true",
                   help="skip the harder cases rebuilt from the real recordings (short, patient first, clinician "
                        "silent, similar voices)")
    p.add_argument("--json", dest="json_out", help="also write the results as JSON here")
    p.add_argument("--model", help="ASR model for the transcripts (default: configured)")
    p.set_defaults(func=cmd_bench_speakers)
