import sys

from common.cli import Command, dispatch

COMMANDS = {
    "synth": Command("training.synth", "write a deterministic, music-like generated audio catalog"),
    "moss-info": Command("training.moss_info", "print the MOSS encoder's parameter count and frame rate"),
    "tokenize": Command("training.tokenize", "audio files -> MOSS RVQ codes, one .npz per track or chunk"),
    "splits": Command("training.splits", "train/val/test splits by track id"),
    "views": Command("training.views", "K degraded excerpts per train/val track at any offset, tokenized alone, with their catalog windows"),
    "train": Command("training.train", "train the TokenEmbedder with NT-Xent"),
    "evaluate": Command("training.evaluate", "Recall@K / MRR per condition x length: a split's excerpts at random offsets against the whole catalog"),
    "layout-sweep": Command("training.layout", "recall, bytes per minute and build time of catalog layouts (window, hop, whole vs alone)"),
    "code-stability": Command("training.code_stability", "share of unchanged codes per RVQ level under noise, reverb, EQ and sample shifts"),
    "codec-report": Command("training.codec_report", "codec quality and code stability per RVQ level on held-out music, beside the random encoder"),
    "codec-train": Command("training.codec.train", "train a MOSS-architecture codec from scratch on real music (resumable slices)"),
    "codec-export": Command("training.codec.export", "codec-train state -> official-layout config.json + model.safetensors"),
    "corpus": Command("training.corpus.build", "Debian's free game music -> deduplicated 24 kHz mono WAV corpus with manifest and splits"),
    "corpus-pack": Command("training.corpus.pack", "a split (or all) of the corpus as compact Ogg Vorbis/Opus within a size budget, for a GPU machine"),
    "corpus-unpack": Command("training.corpus.unpack", "merge corpus packs into one corpus folder (manifest.csv + audio/)"),
    "sweep": Command("training.sweep", "train the embedder's base config and one-change variants (levels, width, pooling, batch...) and compare their val recall@1"),
    "quality": Command("training.quality", "corpus (or generated) audio -> tokenize -> splits -> views -> train -> evaluate: reports/quality.json"),
}

if __name__ == "__main__":
    sys.exit(dispatch("python -m training", __doc__ or "CloudTune training tools", COMMANDS))
