"""Model cards and the ONNX runner the engine's learned policies use.

A model ``NAME.onnx`` travels with ``NAME.card.json``: what it is (kind, label and
its definition, the fast-tier size it was labelled at), its inputs (feature names and
version), how it was made (training traces with sha256, seed, split, command, date),
its held-out metrics, the onnx opset and the model's own sha256.  Loading checks all
of it against this recmg: a model whose features, version, kind or bytes do not match
fails with an error that names the mismatch (and a reload keeps the old model).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from recmg.safefile import read_regular

from recmg.engine.models import features as ft

CARD_SUFFIX = ".card.json"


class ModelError(ValueError):
    """A model file or its card is missing, malformed, or does not match."""


def card_path(onnx_path: str | Path) -> Path:
    p = Path(onnx_path)
    return p.with_name(p.name[:-len(".onnx")] + CARD_SUFFIX if p.name.endswith(".onnx")
                       else p.name + CARD_SUFFIX)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def feature_names(kind: str, family: str | None = None) -> tuple[str, ...]:
    """The inputs of a model of this kind: per access (caching), per candidate
    (the prefetch model), or per position of a stream (the sequence prefetchers)."""
    from recmg.engine.models.candidates import CANDIDATE_FEATURE_NAMES
    from recmg.engine.models.sequence import TOKEN_NAMES

    if kind == "prefetch":
        return TOKEN_NAMES.get(family or "", CANDIDATE_FEATURE_NAMES)
    return ft.FEATURE_NAMES


OBSERVE_MODES = ("access", "counted")


def observe_of(card: dict) -> str:
    """How a caching model's features were observed (card ``features.observe``):
    "access" (a row per access: every card before counted observation) or "counted"
    (a row per distinct unit of a batch, with its reads: features.observe_counted)."""
    return (card.get("features") or {}).get("observe", "access")


# the card's sections recmg reads; each, where present, must be a JSON object
SECTIONS = ("features", "label", "model", "serving", "input", "candidates", "training",
            "held_out")
# the card's fields recmg looks up or compares as names: strings where present
NAMES = (("model", "family"), ("label", "name"), ("label", "granularity"),
         ("features", "observe"))
MAX_WINDOW_FACTOR = 1024.0  # a caching model's keep window, in fast tiers of accesses
MAX_VOCABULARY = 1 << 20  # a sequence prefetcher's classes


def _check_serving(card: dict, cp: Path, kind: str) -> None:
    """What the card tells serving to size or compute with, in range (a card may come
    from the learning loop's unprivileged trainer): ModelError naming the field."""
    from recmg.engine.models import candidates as c

    def bad(field, v, want):
        raise ModelError(f"{cp}: its {field} is {str(v)[:60]!r}, not {want}")

    if kind == "caching":
        f = (card.get("serving") or {}).get("window_factor", 1.0)
        if type(f) not in (int, float) or not 0 < f <= MAX_WINDOW_FACTOR:
            bad("serving.window_factor", f, f"a number in (0, {MAX_WINDOW_FACTOR:g}]")
        return
    ranges = {"ring": (1, c.MAX_RING), "ring_per_capacity": (0, 64),
              "max_candidates": (1, c.MAX_CANDIDATES),
              "successors": (0, c.MAX_SUCCESSOR_BITS)}
    for field, (lo, hi) in ranges.items():  # each bounds memory a target holds
        v = (card.get("candidates") or {}).get(field, lo)
        if type(v) is not int or not lo <= v <= hi:
            bad(f"candidates.{field}", v, f"an integer in {lo}..{hi}")
    vocab = card.get("vocabulary", [])
    if not isinstance(vocab, list) or len(vocab) > MAX_VOCABULARY or \
            any(type(v) is not int or abs(v) >= 1 << 62 for v in vocab) or \
            any(a >= b for a, b in zip(vocab, vocab[1:])):
        bad("vocabulary", vocab, f"at most {MAX_VOCABULARY} increasing integers")


MAX_MODEL_BYTES = 256 << 20
MAX_CARD_BYTES = 1 << 20


def load_card(onnx_path: str | Path, kind: str) -> dict:
    """The card of a model, checked against the file and this recmg's features."""
    return load_model(onnx_path, kind)[0]


def load_model(onnx_path: str | Path, kind: str) -> tuple[dict, bytes]:
    """(card, model bytes): the card checked against the bytes (sha256) and this
    recmg's features.  Both files are read once, bounded and only if they are regular
    files (recmg.safefile.read_regular: a FIFO or /dev/zero is refused, never waited
    on), so what onnxruntime loads is what was checked."""
    onnx_path = Path(onnx_path)
    cp = card_path(onnx_path)
    try:
        card = json.loads(read_regular(cp, MAX_CARD_BYTES, "model card"))
    except FileNotFoundError:
        raise ModelError(f"{onnx_path}: no model card ({cp.name} beside it)") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"{cp}: unreadable model card: {e}") from None
    if not isinstance(card, dict):
        raise ModelError(f"{cp}: a model card is a JSON object")
    if card.get("kind") != kind:
        raise ModelError(f"{cp}: a {card.get('kind')!r} model, not a {kind} model")
    for section in SECTIONS:  # read as objects by the checks and the policies
        if not isinstance(card.get(section) or {}, dict):
            raise ModelError(f"{cp}: its {section!r} is not an object")
    for section, field in NAMES:  # looked up and compared as names
        v = (card.get(section) or {}).get(field)
        if v is not None and not isinstance(v, str):
            raise ModelError(f"{cp}: its {section}.{field} is {str(v)[:60]!r}, not a name")
    feats = card.get("features") or {}
    names = feature_names(kind, (card.get("model") or {}).get("family"))
    if feats.get("version") != ft.FEATURE_VERSION or \
            list(feats.get("names") or []) != list(names):
        raise ModelError(f"{cp}: trained on features version {feats.get('version')} "
                         f"{feats.get('names')}; this recmg computes version "
                         f"{ft.FEATURE_VERSION} {list(names)}")
    _check_serving(card, cp, kind)
    if observe_of(card) not in OBSERVE_MODES:
        raise ModelError(f"{cp}: features observed {observe_of(card)!r}; this recmg knows "
                         f"{', '.join(OBSERVE_MODES)}")
    try:
        data = read_regular(onnx_path, MAX_MODEL_BYTES, "model")
    except OSError as e:
        raise ModelError(str(e) if str(onnx_path) in str(e) else
                         f"{onnx_path}: {e.strerror or e}") from None
    digest = hashlib.sha256(data).hexdigest()
    if card.get("onnx_sha256") != digest:
        raise ModelError(f"{onnx_path}: sha256 {digest[:12]}... is not the card's "
                         f"{str(card.get('onnx_sha256'))[:12]}... (model and card do not "
                         "belong together)")
    return card, data


class OnnxModel:
    """An ONNX model with its card, run by onnxruntime on the CPU: one batched call
    per step, float32 features in, one float32 per row out."""

    def __init__(self, path: str | Path, kind: str = "caching", threads: int = 1):
        import onnxruntime as ort

        self.path = Path(path)
        self.kind = kind
        self.card, data = load_model(self.path, kind)
        self.sha256 = self.card["onnx_sha256"]
        self.name = self.card.get("name", self.path.stem)
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(threads))
        so.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelError(f"{self.path}: onnxruntime cannot load it: {e}") from None
        inp = self.session.get_inputs()
        shape = inp[0].shape if len(inp) == 1 else []
        nf = len(feature_names(kind, (self.card.get("model") or {}).get("family")))
        if len(inp) != 1 or shape[-1] != nf or len(shape) not in (2, 3) or \
                (len(shape) == 3 and not isinstance(shape[1], int)):
            raise ModelError(f"{self.path}: expects inputs {[(i.name, i.shape) for i in inp]},"
                             f" not one (n, {nf}) feature matrix or (n, window, "
                             f"{nf}) windows of recent accesses")
        self.input = inp[0].name
        self.n_features = nf
        # how many recent accesses one prediction sees (1: the access alone)
        self.window = shape[1] if len(shape) == 3 else 1

    CHUNK = 1 << 16  # rows per onnxruntime call: bounds its working memory

    def probe(self) -> None:
        """Run the model once on zero features, as recmgd will call it, and check what
        comes back: every output has one row per input row, and a caching model (or
        the candidate-ranking prefetch model) one number per row.  ModelError
        otherwise, so `recmgd --check-config` refuses a model that would fail every
        target at runtime."""
        n = 3
        x = np.zeros((n, self.window, self.n_features) if self.window > 1
                     else (n, self.n_features), np.float32)
        try:
            outs = self.session.run(None, {self.input: x})
        except Exception as e:  # onnxruntime's own exception types
            raise ModelError(f"{self.path}: onnxruntime cannot run it on a ({', '.join(map(str, x.shape))}) "
                             f"feature matrix: {str(e)[:300]}") from None
        shapes = [np.shape(o) for o in outs]
        if not outs or any(len(sh) == 0 or sh[0] != n for sh in shapes):
            raise ModelError(f"{self.path}: outputs of shapes {shapes} for {n} rows; every "
                             f"output needs one row per input row")
        family = (self.card.get("model") or {}).get("family")
        per_row = self.kind == "caching" or family in (None, "mlp")
        if per_row and np.size(outs[0]) != n:
            raise ModelError(f"{self.path}: its first output has shape {shapes[0]}; a "
                             f"{self.kind} model gives one number per row, ({n},) or ({n}, 1)")
        if not all(np.all(np.isfinite(np.asarray(o, np.float64))) for o in outs):
            raise ModelError(f"{self.path}: outputs are not finite on zero features")

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output of the model for x, one call per CHUNK rows."""
        parts = [self.session.run(None, {self.input: np.ascontiguousarray(
            x[lo:lo + self.CHUNK], np.float32)}) for lo in range(0, len(x), self.CHUNK)]
        if not parts:
            return [np.zeros((0,) + tuple(d if isinstance(d, int) else 0 for d in o.shape[1:]),
                             np.float32) for o in self.session.get_outputs()]
        return [np.concatenate([np.asarray(p[i], np.float32) for p in parts])
                for i in range(len(parts[0]))]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """x: (n, F), or (n, window, F) for a windowed model; one call per CHUNK rows."""
        out = np.empty(len(x), np.float32)
        for lo in range(0, len(x), self.CHUNK):
            part = np.ascontiguousarray(x[lo:lo + self.CHUNK], np.float32)
            out[lo:lo + len(part)] = np.asarray(
                self.session.run(None, {self.input: part})[0], np.float32).reshape(len(part))
        return out
