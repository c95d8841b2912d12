"""Regenerates the Zephyr tokenizer shipped at the repository root (`tokenizer.json`, `tokenizer_config.json`).

The source is the real Mistral-7B-v0.1 `tokenizer.model` (the one Zephyr-7B-beta uses) that the `mistral-common`
package ships as `data/tokenizer.model.v1`. Building needs `sentencepiece` and `protobuf`; using the result only needs
`tokenizers`.

The fast tokenizer is built so that it reproduces sentencepiece (which the original model used) exactly, including
runs of spaces, where transformers' own conversion differs:
- BPE merges are ranked by the sentencepiece piece score, not by vocabulary id. The whitespace-run pieces (`▁▁`,
  `▁▁▁`, ...) have score -1e9 in this model, so sentencepiece merges them last; ranking by id would merge `▁▁` first
  (`"  Describe"` -> `▁▁ Describe` instead of `▁ ▁Describe`).
- The dummy prefix is a `Prepend("▁")` normalizer, as in the original Llama fast tokenizers: the Metaspace
  pre-tokenizer skips the prefix when the text already starts with a space, sentencepiece does not.
- `<image>` is a special token (id 32000), so the text after it gets its own dummy prefix, as in the original's
  chunk-by-chunk `tokenizer_image_token`.
- `"tokenizer_class": "TokenizersBackend"` makes transformers load `tokenizer.json` as it is; with `LlamaTokenizer`
  it rebuilds the pre-tokenizer on load and text after `</s>` tokenizes differently.

Usage: `vision-zephyr build-tokenizer [--sentencepiece-model PATH] [--output-dir DIR]`
"""

import argparse
import importlib.resources
import importlib.util
import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
from tokenizers.models import BPE
from transformers import TokenizersBackend
from transformers.tokenization_utils_base import generate_merges
from transformers.utils.import_utils import is_protobuf_available, is_sentencepiece_available

from vision_zephyr_tools.remote_code import REPO_ROOT


IMAGE_TOKEN = "<image>"
SENTENCEPIECE_CONTROL, SENTENCEPIECE_UNKNOWN = 3, 2

TOKENIZER_CONFIG = {
    "tokenizer_class": "TokenizersBackend",
    "backend": "tokenizers",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": "</s>",
    "extra_special_tokens": [IMAGE_TOKEN],
    "add_bos_token": True,
    "add_eos_token": False,
    "padding_side": "left",
    "clean_up_tokenization_spaces": False,
    "model_max_length": 32768,
}


def default_sentencepiece_model() -> Path:
    """Path of Mistral-7B-v0.1's `tokenizer.model` inside the installed `mistral-common` package."""
    return Path(str(importlib.resources.files("mistral_common") / "data" / "tokenizer.model.v1"))


def read_sentencepiece_pieces(model_path: Path) -> list:
    """Reads the pieces (text, score, type) of a sentencepiece model file."""
    if not (is_sentencepiece_available() and is_protobuf_available()):
        raise ImportError(
            "Building the tokenizer needs `sentencepiece` and `protobuf`: pip install sentencepiece protobuf"
        )
    from sentencepiece import sentencepiece_model_pb2

    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(model_path.read_bytes())
    if model.trainer_spec.model_type != sentencepiece_model_pb2.TrainerSpec.BPE:
        raise ValueError(f"{model_path} is not a BPE sentencepiece model")
    return list(model.pieces)


def build_backend(pieces: list) -> Tokenizer:
    """Builds a `tokenizers.Tokenizer` that encodes exactly like sentencepiece with these pieces."""
    vocab = {piece.piece: index for index, piece in enumerate(pieces)}
    scores = {piece.piece: piece.score for piece in pieces}
    backend = Tokenizer(
        BPE(vocab=vocab, merges=generate_merges(vocab, scores), unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(content=" ", left=1)]
    )
    backend.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", vocab["<s>"])]
    )
    special_pieces = [p.piece for p in pieces if p.type in (SENTENCEPIECE_CONTROL, SENTENCEPIECE_UNKNOWN)]
    backend.add_special_tokens([AddedToken(piece, special=True, normalized=False) for piece in special_pieces])
    backend.add_special_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
    return backend


def build_tokenizer(model_path: Path) -> TokenizersBackend:
    """Builds the Zephyr tokenizer with `<image>` (id 32000), BOS added, pad `</s>` and left padding."""
    return TokenizersBackend(tokenizer_object=build_backend(read_sentencepiece_pieces(model_path)), **TOKENIZER_CONFIG)


def save_tokenizer(tokenizer: TokenizersBackend, output_dir: Path) -> None:
    """Writes `tokenizer.json` and a `tokenizer_config.json` that holds only the settings listed above."""
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.backend_tokenizer.save(str(output_dir / "tokenizer.json"))
    config = json.dumps(TOKENIZER_CONFIG, indent=2, ensure_ascii=False)
    (output_dir / "tokenizer_config.json").write_text(config + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sentencepiece-model", type=Path, help="Mistral-7B-v0.1's tokenizer.model (default: mistral-common's copy)"
    )
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT)
    args = parser.parse_args()
    if args.sentencepiece_model is None and importlib.util.find_spec("mistral_common") is None:
        parser.error("--sentencepiece-model: give the path of tokenizer.model, or pip install mistral-common")
    tokenizer = build_tokenizer(args.sentencepiece_model or default_sentencepiece_model())
    if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) != 32000:
        raise RuntimeError(f"{IMAGE_TOKEN} got id {tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)}, expected 32000")
    save_tokenizer(tokenizer, args.output_dir)
    print(f"wrote tokenizer.json and tokenizer_config.json to {args.output_dir}")


if __name__ == "__main__":
    main()
