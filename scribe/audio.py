"""Audio plumbing: PCM conversion, resampling, reading files, and frame sources.

Everything downstream of this module sees 16 kHz mono: Whisper and Silero VAD are trained
on it, and a single rate keeps encounter time a simple sample count. Other rates are
resampled here (PyAV's libswresample, already a faster-whisper dependency, stateful so a
stream resamples without clicks at frame boundaries).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000


class AudioError(Exception):
    """Audio that cannot be used; the message says what to do about it."""


def int16_to_float(samples: np.ndarray) -> np.ndarray:
    """PCM16 sample values (any shape) → float32 in [-1, 1): the one conversion scribe uses."""
    return samples.astype(np.float32) / 32768.0


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    return int16_to_float(np.frombuffer(pcm, dtype="<i2"))


def deinterleave(pcm: bytes) -> np.ndarray:
    """Interleaved PCM16 stereo → ``(n, 2)`` int16."""
    return np.frombuffer(pcm, dtype="<i2").reshape(-1, 2)


def mixdown(stereo: np.ndarray) -> bytes:
    """What is stored and transcribed for two-channel input: the mean of the channels, PCM16."""
    return ((stereo[:, 0].astype(np.int32) + stereo[:, 1]) // 2).astype("<i2").tobytes()


def float_to_pcm16(samples: np.ndarray) -> bytes:
    clipped = np.clip(samples, -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()


class Resampler:
    """Streaming PCM16 mono resampler to 16 kHz."""

    def __init__(self, rate_in: int):
        import av  # PyAV comes with faster-whisper

        self.rate_in = rate_in
        self._av = av
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)

    def _run(self, frame: object | None) -> bytes:
        return b"".join(o.to_ndarray().astype("<i2").tobytes() for o in self._resampler.resample(frame))

    def feed(self, pcm: bytes) -> bytes:
        if self.rate_in == SAMPLE_RATE:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = self._av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self.rate_in
        return self._run(frame)

    def flush(self) -> bytes:
        return b"" if self.rate_in == SAMPLE_RATE else self._run(None)


def load_audio(path: str | Path, *, keep_stereo: bool = False) -> np.ndarray:
    """Read a wav/flac/ogg/mp3 file as float32 16 kHz mono (``keep_stereo``: a two-channel file
    is returned as ``(n, 2)``, each channel resampled, for speaker labels by channel).

    Raises ``AudioError`` naming the file for a missing, empty or undecodable file, so a
    corrupt upload is reported instead of transcribed as silence.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile reports format problems as generic errors
        raise AudioError(f"cannot decode {path.name}: {exc}. Use WAV, FLAC, OGG or MP3 audio.") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path.name} contains no audio samples")
    if keep_stereo and data.shape[1] == 2:
        channels = [_to_16k(data[:, c], rate) for c in range(2)]
        n = min(len(c) for c in channels)
        return np.ascontiguousarray(np.stack([c[:n] for c in channels], axis=1), dtype=np.float32)
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return _to_16k(mono, rate)


def _to_16k(mono: np.ndarray, rate: int) -> np.ndarray:
    if rate != SAMPLE_RATE:
        resampler = Resampler(rate)
        pcm = resampler.feed(float_to_pcm16(mono)) + resampler.flush()
        mono = pcm16_to_float(pcm)
    return np.ascontiguousarray(mono, dtype=np.float32)


@dataclass(frozen=True)
class Chunk:
    """A block of PCM16 mono audio from a source, with its rate."""

    pcm: bytes
    sample_rate: int


def iter_chunks(samples: np.ndarray, frame_ms: int = 100) -> Iterator[bytes]:
    """PCM16 frames of ``frame_ms``; a ``(n, 2)`` array gives interleaved stereo frames."""
    step = SAMPLE_RATE * frame_ms // 1000
    width = 2 * (samples.shape[1] if samples.ndim == 2 else 1)
    pcm = float_to_pcm16(samples.reshape(-1))
    for i in range(0, len(samples), step):
        yield pcm[width * i : width * (i + step)]


class FileSource:
    """Plays a file as a live stream: fixed-size frames, paced at ``speed`` × real time.

    ``speed=0`` sends as fast as the connection takes it (tests, benchmarks).
    """

    def __init__(self, path: str | Path, *, frame_ms: int = 100, speed: float = 1.0, keep_stereo: bool = False):
        self.samples = load_audio(path, keep_stereo=keep_stereo)
        self.channels = self.samples.shape[1] if self.samples.ndim == 2 else 1
        """2 when ``keep_stereo`` and the file has two channels (frames are then interleaved)."""
        self.frame_ms = frame_ms
        self.speed = speed
        self.sample_rate = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    async def chunks(self) -> AsyncIterator[bytes]:
        t0 = time.monotonic()
        sent = 0.0
        for pcm in iter_chunks(self.samples, self.frame_ms):
            if self.speed > 0:
                due = t0 + sent / self.speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            yield pcm
            sent += len(pcm) / (2 * self.channels) / SAMPLE_RATE


class MicrophoneSource:
    """Live microphone input via sounddevice (PortAudio).

    ``sounddevice`` is imported here, lazily: without the ``libportaudio2`` system library the
    import itself fails, and with it but no input device opening the stream fails. Both
    become an ``AudioError`` that says what to install or plug in.
    """

    def __init__(self, *, device: str | int | None = None, frame_ms: int = 100, sample_rate: int = SAMPLE_RATE):
        self.device = device
        self.frame_ms = frame_ms
        self.sample_rate = sample_rate
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        """End the recording: audio captured so far is still sent, then the stream ends (so
        the client sends ``stop`` and the transcript and draft are finished)."""
        self._stopped.set()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            import sounddevice as sd
        except OSError as exc:
            raise AudioError(
                "the microphone needs the PortAudio library: install it with "
                "'apt-get install libportaudio2' (Debian/Ubuntu) and try again "
                f"({exc})"
            ) from None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=600)

        def callback(indata, frames, time_info, status):  # runs on PortAudio's thread
            loop.call_soon_threadsafe(_put_nowait_drop_oldest, queue, bytes(indata))

        blocksize = self.sample_rate * self.frame_ms // 1000
        try:
            stream = sd.RawInputStream(
                samplerate=self.sample_rate,
                channels=1,
                dtype="int16",
                blocksize=blocksize,
                device=self.device,
                callback=callback,
            )
        except Exception as exc:  # sd.PortAudioError, ValueError for a bad device
            raise AudioError(
                f"cannot open a microphone ({exc}); check that an input device is connected, "
                "or list devices with 'python -m sounddevice' and pass --device"
            ) from None
        with stream:
            while not self._stopped.is_set():
                getter = asyncio.ensure_future(queue.get())
                stopper = asyncio.ensure_future(self._stopped.wait())
                done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if getter in done:
                    yield getter.result()
                else:
                    getter.cancel()
        while not queue.empty():  # what was captured before the stream closed
            yield queue.get_nowait()


def _put_nowait_drop_oldest(queue: asyncio.Queue[bytes], item: bytes) -> None:
    # A stalled network must not grow memory without bound; the client's own unacked
    # buffer is the durable copy, so dropping here only happens after ~60 s of stall.
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)
