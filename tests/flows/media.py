"""Tiny image / speech models and generated, learnable data for the media tasks' tests.

| task         | model (built from a config)               | data                                        |
|--------------|-------------------------------------------|---------------------------------------------|
| image_cls    | ViTForImageClassification, 32 px, 8 px    | 32 px images of one colour (red / green /   |
|              | patches; ViTImageProcessor                | blue) with noise: the class is the colour   |
| semantic_seg | SegformerForSemanticSegmentation, 2       | grey noise with a red square at a random    |
|              | stages; SegformerImageProcessor           | place: mask 1 on the square, 0 elsewhere    |
| asr          | WhisperForConditionalGeneration, 8 mel    | 0.5 s of tones at 8 kHz (resampled to 16    |
|              | bins, 1 s windows; WhisperProcessor with  | kHz), one tone per word: "low" 300 Hz,      |
|              | a byte-level tokenizer and Whisper's      | "mid" 700 Hz, "high" 1500 Hz                |
|              | special tokens (English only)             |                                             |
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
SEG_LABELS = ["background", "square"]
TONES = {"low": 300.0, "mid": 700.0, "high": 1500.0}
AUDIO_RATE = 8000  # the files' rate; the feature extractor takes 16 kHz


def vit_dir(root: Path, seed: int = 0) -> str:
    import transformers as tf

    torch.manual_seed(seed)
    cfg = tf.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64,
    )  # fmt: skip
    path = root / "vit"
    tf.ViTForImageClassification(cfg).save_pretrained(path)
    tf.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return str(path)


def segformer_dir(root: Path, seed: int = 0) -> str:
    import transformers as tf

    torch.manual_seed(seed)
    cfg = tf.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=32,
    )  # fmt: skip
    path = root / "segformer"
    tf.SegformerForSemanticSegmentation(cfg).save_pretrained(path)
    tf.SegformerImageProcessor(size={"height": 32, "width": 32}, do_reduce_labels=False).save_pretrained(path)
    return str(path)


def whisper_dir(root: Path, seed: int = 0) -> str:
    import transformers as tf

    from tests.flows import fixtures

    path = root / "whisper"
    base = fixtures.bytelevel_tokenizer()
    tok = tf.WhisperTokenizerFast(
        tokenizer_object=base.backend_tokenizer,
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    specials = ["<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>", "<|notimestamps|>"]
    tok.add_special_tokens({"additional_special_tokens": specials})
    extractor = tf.WhisperFeatureExtractor(feature_size=8, sampling_rate=16000, chunk_length=1)
    tf.WhisperProcessor(feature_extractor=extractor, tokenizer=tok).save_pretrained(path)
    tok = tf.AutoProcessor.from_pretrained(path).tokenizer  # reloaded: the special tokens resolve
    ids = dict(zip(specials, tok.convert_tokens_to_ids(specials), strict=True))
    start, eot = ids["<|startoftranscript|>"], tok.convert_tokens_to_ids("<|endoftext|>")
    torch.manual_seed(seed)
    cfg = tf.WhisperConfig(
        vocab_size=len(tok), num_mel_bins=8, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=50, max_target_positions=64, pad_token_id=eot, bos_token_id=eot,
        eos_token_id=eot, decoder_start_token_id=start, suppress_tokens=[], begin_suppress_tokens=[],
    )  # fmt: skip
    model = tf.WhisperForConditionalGeneration(cfg)
    # As a multilingual Whisper checkpoint: generate(language=..., task=...) finds its tokens here.
    generation = model.generation_config
    generation.is_multilingual = True
    generation.lang_to_id = {"<|en|>": ids["<|en|>"]}
    generation.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    generation.no_timestamps_token_id = ids["<|notimestamps|>"]
    generation._from_model_config = False  # else loading rebuilds it from config.json, without these
    model.save_pretrained(path)
    return str(path)


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def colour_image(name: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    noise = rng.integers(-25, 26, (size, size, 3))
    return np.clip(np.array(COLOURS[name])[None, None, :] + noise, 0, 255)


def image_folder(root: Path, per_class: int = 8, seed: int = 0) -> str:
    """An image folder (train/<class>/*.png, test/<class>/*.png): datasets' imagefolder layout."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", max(per_class // 2, 2))):
        for name in COLOURS:
            folder = root / "images" / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (folder / f"{i}.png").write_bytes(_png(colour_image(name, rng)))
    return str(root / "images")


def square_scene(rng: np.random.Generator, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    image = rng.integers(90, 140, (size, size, 3))
    mask = np.zeros((size, size), dtype=np.uint8)
    side = int(rng.integers(8, 16))
    top, left = (int(v) for v in rng.integers(0, size - side, 2))
    image[top : top + side, left : left + side] = COLOURS["red"]
    mask[top : top + side, left : left + side] = 1
    return image, mask


def seg_files(root: Path, rows: int = 24, seed: int = 0, suffix: str = ".jsonl") -> str:
    """A .jsonl or .parquet file of {image, annotation} PNG paths (relative to the file) with
    generated scenes."""
    rng = np.random.default_rng(seed)
    folder = root / "scenes"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(rows):
        image, mask = square_scene(rng)
        (folder / f"{i}.png").write_bytes(_png(image))
        (folder / f"{i}_mask.png").write_bytes(_png(mask))
        records.append({"image": f"scenes/{i}.png", "annotation": f"scenes/{i}_mask.png"})
    if suffix == ".parquet":
        import pandas as pd

        pd.DataFrame(records).to_parquet(root / "scenes.parquet")
        return str(root / "scenes.parquet")
    return write_jsonl(root / "scenes.jsonl", records)


def tones(words: list[str], rate: int = AUDIO_RATE, seconds: float = 0.15) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    parts = [0.5 * np.sin(2 * np.pi * TONES[w] * t) for w in words]
    gap = np.zeros(int(rate * 0.03))
    return np.concatenate([np.concatenate([p, gap]) for p in parts]).astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int = AUDIO_RATE) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV")
    return buf.getvalue()


def speech_jsonl(root: Path, rows: int = 24, seed: int = 0) -> str:
    """A jsonl of {audio: wav path, text: transcript}: two or three tone-words per clip."""
    rng = np.random.default_rng(seed)
    folder = root / "clips"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    names = list(TONES)
    for i in range(rows):
        words = [names[int(k)] for k in rng.integers(0, 3, int(rng.integers(2, 4)))]
        (folder / f"{i}.wav").write_bytes(wav_bytes(tones(words)))
        records.append({"audio": f"clips/{i}.wav", "text": " ".join(words)})
    return write_jsonl(root / "speech.jsonl", records)


def write_jsonl(path: str | os.PathLike[str], records: list[dict[str, Any]]) -> str:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


# -- stand-ins of the recipes' Hub datasets (the real columns and features, generated content) -------
FOODS = ["apple_pie", "baby_back_ribs", "baklava"]  # Food-101's first three class names
FOOD_COLOURS = dict(zip(FOODS, COLOURS))


def food101(per_class: int = 6, seed: int = 0) -> Any:
    """ethz/food101: `image` (Image), `label` (ClassLabel); splits train and validation."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

    rng = np.random.default_rng(seed)
    features = Features({"image": Image(), "label": ClassLabel(names=FOODS)})

    def split(n: int) -> Any:
        rows = [(k, colour_image(FOOD_COLOURS[name], rng)) for k, name in enumerate(FOODS) for _ in range(n)]
        return Dataset.from_dict(
            {"image": [{"bytes": _png(a), "path": None} for _, a in rows], "label": [k for k, _ in rows]},
            features=features,
        )

    return DatasetDict({"train": split(per_class), "validation": split(2)})


def scene_parse(rows: int = 16, seed: int = 0) -> Any:
    """scene_parse_150 (parquet export, scene_parsing): `image`, `annotation` (mask images: 0 =
    unlabelled, 1..150 = classes), `scene_category` (an int); splits train, validation, test (the test
    split unannotated, as the real one). Scenes: wall (1) with a sky (3) square and an unlabelled strip."""
    from datasets import Dataset, DatasetDict, Features, Image, Value

    rng = np.random.default_rng(seed)
    features = Features({"image": Image(), "annotation": Image(), "scene_category": Value("int64")})

    def split(n: int, annotated: bool = True) -> Any:
        images, masks = [], []
        for _ in range(n):
            image, square = square_scene(rng)
            mask = np.where(square == 1, 3, 1).astype(np.uint8)
            mask[:, :2] = 0
            images.append({"bytes": _png(image), "path": None})
            masks.append({"bytes": _png(mask), "path": None} if annotated else None)
        return Dataset.from_dict(
            {"image": images, "annotation": masks, "scene_category": [0] * n}, features=features
        )

    return DatasetDict({"train": split(rows), "validation": split(4), "test": split(2, annotated=False)})


def librispeech(rows: int = 16, seed: int = 0) -> Any:
    """openslr/librispeech_asr (clean): `audio` (Audio, 16 kHz in the real data; 8 kHz here, so the
    run resamples), `text` (upper case), speaker_id, chapter_id, id; splits train.100, validation, test."""
    from datasets import Audio, Dataset, DatasetDict

    rng = np.random.default_rng(seed)
    names = list(TONES)

    def split(n: int, tag: str) -> Any:
        texts, audio = [], []
        for _ in range(n):
            words = [names[int(k)] for k in rng.integers(0, 3, int(rng.integers(2, 4)))]
            texts.append(" ".join(words).upper())
            audio.append({"bytes": wav_bytes(tones(words)), "path": None})
        table = Dataset.from_dict(
            {
                "audio": audio,
                "text": texts,
                "speaker_id": [1] * n,
                "chapter_id": [2] * n,
                "id": [f"{tag}-{i}" for i in range(n)],
            }
        )
        # datasets' Audio encoding needs torchcodec: cast the {bytes, path} storage instead.
        return table.cast_column("audio", Audio(decode=False))

    return DatasetDict({"train.100": split(rows, "t"), "validation": split(4, "v"), "test": split(4, "s")})
