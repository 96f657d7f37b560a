"""Speech recognition: model resolution, streaming VAD, commit policies, transcribers."""
