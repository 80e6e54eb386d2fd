"""The learning loop's model store: judged candidates per client, which one serves,
and the ones before it (recmg.service.learning)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from recmg import config as cfgmod
from recmg.safefile import atomic_output, read_regular
from recmg.service.confine import run_confined

log = logging.getLogger("recmgd")

MAX_MODEL_BYTES = 64 << 20  # a candidate's ONNX file (the shipped ones are ~10 KiB)
MAX_CARD_BYTES = 4 << 20
MAX_STORE_KEYS = 256  # clients with stored models (they choose names); the least
# recently trained go first
ID_RE = re.compile(r"\d{6}-\d{8}T\d{6}")  # a candidate's id: sequence number, time


class ModelStore:
    """Judged candidates per key, which one serves, and the ones before it."""

    def __init__(self, root: Path, keep: int):
        self.root, self.keep = root / "models", keep

    def _index(self, key: str) -> dict:
        path = self.root / key / "serving.json"
        try:
            d = json.loads(read_regular(path, 1 << 20, "model index"))
            ok = lambda m: isinstance(m, str) and ID_RE.fullmatch(m)  # noqa: E731
            if isinstance(d, dict) and (d.get("serving") is None or ok(d["serving"])) and \
                    isinstance(d.get("history", []), list) and all(map(ok, d.get("history", []))):
                return {"serving": d.get("serving"), "history": list(d.get("history", []))}
            log.warning("%s is malformed: no learned model serves for %s", path, key)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            log.warning("%s: %s: no learned model serves for %s", path, e, key)
        return {"serving": None, "history": []}

    def _write_index(self, key: str, index: dict) -> None:
        with atomic_output(self.root / key / "serving.json", 0o600) as f:
            f.write(json.dumps(index).encode())

    def files(self, key: str, mid: str) -> dict:
        """The model paths of a stored candidate (caching, and prefetch or None)."""
        d = self.root / key / mid
        v = json.loads(read_regular(d / "validation.json", 1 << 20, "validation"))
        return {"caching": str(d / "caching.onnx"),
                "prefetch": str(d / "prefetch.onnx") if v.get("prefetch") else None}

    def serving(self, key: str) -> tuple[str, dict] | None:
        mid = self._index(key)["serving"]
        if mid is None:
            return None
        return mid, self.files(key, mid)

    def add(self, key: str, src: Path, result: dict, accepted: bool, checks) -> str:
        """Copy a candidate's files out of the trainer's ``src`` (bounded regular files,
        no symlink followed into), check the copies with ``checks(paths)`` (raises
        ModelError/ValueError), keep them with ``result`` as validation.json; when
        ``accepted``, it serves.  Returns its id."""
        kdir = self.root / key
        kdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)  # models of one client are no other user's to read
        # ids sort in the order they were made: a sequence number, then the time
        seq = max([int(m.split("-")[0]) for m in self._ids(key)] or [0]) + 1
        mid = f"{seq:06d}-{time.strftime('%Y%m%dT%H%M%S')}"
        stage = kdir / f".stage-{mid}"
        stage.mkdir(mode=0o700)
        try:
            names = ["caching"] + (["prefetch"] if result.get("prefetch") else [])
            for name in names:
                for fname, cap in ((f"{name}.onnx", MAX_MODEL_BYTES),
                                   (f"{name}{card_suffix()}", MAX_CARD_BYTES)):
                    data = read_regular(nofollow(src / fname), cap, f"candidate {fname}")
                    with atomic_output(stage / fname, 0o600) as f:
                        f.write(data)
            checks({n: stage / f"{n}.onnx" for n in names})
            with atomic_output(stage / "validation.json", 0o600) as f:
                f.write(json.dumps({**result, "accepted": accepted}).encode())
            os.rename(stage, kdir / mid)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        if accepted:
            index = self._index(key)
            if index["serving"]:
                index["history"].append(index["serving"])
            index["serving"] = mid
            self._write_index(key, index)
        self._prune(key)
        self._prune_keys(key)
        return mid

    def _prune_keys(self, current: str) -> None:
        """At most MAX_STORE_KEYS clients keep models: those trained least recently go."""
        kdirs = [p for p in self.root.iterdir() if p.is_dir() and p.name != current]
        if len(kdirs) < MAX_STORE_KEYS:
            return
        kdirs.sort(key=lambda p: p.stat().st_mtime)
        for p in kdirs[:len(kdirs) - MAX_STORE_KEYS + 1]:
            shutil.rmtree(p, ignore_errors=True)

    def rollback(self, key: str) -> str | None:
        """The model before the serving one serves again (None: the profile's own)."""
        index = self._index(key)
        if index["serving"] is None:
            raise LookupError(f"{key}: no learned model serves (the profile's own does)")
        index["serving"] = index["history"].pop() if index["history"] else None
        self._write_index(key, index)
        return index["serving"]

    def _prune(self, key: str) -> None:
        index = self._index(key)
        keep = {index["serving"], *index["history"][-1:]}
        ids = self._ids(key)
        drop = [m for m in ids if m not in keep][:max(0, len(ids) - self.keep)]
        for mid in drop:
            shutil.rmtree(self.root / key / mid, ignore_errors=True)
        index["history"] = [h for h in index["history"] if h not in drop]
        self._write_index(key, index)

    def _ids(self, key: str) -> list[str]:
        """The stored candidates of ``key``, oldest first."""
        return sorted(p.name for p in (self.root / key).iterdir()
                      if p.is_dir() and ID_RE.fullmatch(p.name))

    def list(self) -> list[dict]:
        out = []
        if not self.root.is_dir():
            return out
        for kdir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            index = self._index(kdir.name)
            for mid in self._ids(kdir.name):
                mdir = kdir / mid
                try:
                    v = json.loads(read_regular(mdir / "validation.json", 1 << 20))
                except (OSError, ValueError) as e:
                    v = {"error": str(e)}
                out.append({"target": kdir.name, "id": mdir.name,
                            "serving": mdir.name == index["serving"],
                            "previous": mdir.name in index["history"],
                            "accepted": v.get("accepted"), "fetches": v.get("fetches"),
                            "accesses": v.get("accesses"), "train_cpu_s": v.get("train_cpu_s")})
        return out


def card_suffix() -> str:
    from recmg.engine.models.card import CARD_SUFFIX

    return CARD_SUFFIX


def nofollow(path: Path) -> Path:
    """``path`` if it is not a symlink (the trainer's directory is the trainer's)."""
    if path.is_symlink():
        raise OSError(f"{path} is a symlink")
    return path


# onnxruntime's session creation holds the GIL for up to 24 ms (measured on the
# development VM): in recmgd's learning thread that stalls the tick, so the probe of a
# candidate runs in a process of its own (root's: the store is root's; niced, capped)
PROBE = ("import sys; from recmg.engine.models.card import ModelError, OnnxModel\n"
         "for kind, path in zip(sys.argv[1::2], sys.argv[2::2]):\n"
         "    try:\n        OnnxModel(path, kind).probe()\n"
         "    except ModelError as e:\n        print(e); sys.exit(1)\n")


def check(paths: dict, profile: cfgmod.Profile, lcfg: cfgmod.Learning | None = None
           ) -> None:
    """The copies pass the check a profile's models pass (recmg.config); with
    ``lcfg``, onnxruntime's probe runs in a confined process of its own."""
    kinds = []
    for role, path in paths.items():
        key, kind, name = (("model", "caching", profile.caching) if role == "caching" else
                           ("prefetch_model", "prefetch", profile.prefetcher))
        problems = cfgmod.check_model(key, path.name, kind, path.parent / "profile.toml", name,
                                      probe=lcfg is None, observe=profile.observe)
        if problems:
            raise ValueError("; ".join(f"{k}: {v}" for k, v in problems))
        kinds += [kind, str(path)]
    if lcfg is not None:
        with tempfile.TemporaryDirectory(prefix="recmgd-probe-") as d:  # its cwd and HOME
            code, last = run_confined(replace(lcfg, user="root"),
                                      [sys.executable, "-c", PROBE, *kinds], Path(d), 300)
        if code != 0:
            raise ValueError(f"onnxruntime cannot run it: {last or f'exit status {code}'}")
