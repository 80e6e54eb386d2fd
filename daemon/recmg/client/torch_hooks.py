"""PyTorch integration: embedding weights in registered memory, lookups recorded.

    client = instrument(model, "ranker")   # after loading weights, before inference
    with torch.no_grad():
        model(dense, sparse...)            # each forward call is one recorded batch

``instrument`` finds every nn.EmbeddingBag and nn.Embedding in the model, copies
its weight into a page-aligned table allocated by recmg.client (same values, same
dtype), and makes the module's weight a tensor over that memory
(torch.from_numpy shares it), so outputs are identical to the uninstrumented model.
Forward pre-hooks collect each module's indices; a forward hook on the root module
records them as one batch when the root forward returns.

Supported:
- positional or keyword inputs (``bag(input=..., offsets=...)``), 1-D with offsets or
  2-D fixed-size bags;
- a table called several times in one forward: every call's rows are recorded;
- tied weights (several modules sharing one Parameter): one table, every module's
  lookups recorded against it, the tie kept;
- float32, float64, float16 and bfloat16 weights (bfloat16 is stored as 2-byte words,
  registered with dtype ``<u2``: recmg only needs the row size);
- EmbeddingBag's ``padding_idx``: those rows are never read by the bag, so they are
  not recorded (nn.Embedding does read its padding row, so it is recorded).

With ``layout=FILE`` (a row layout, ``recmg layout``) each table's rows are moved
once as the weights are registered, so the rows predicted to be reused share pages, and
a forward pre-hook (first among the module's) passes every lookup's indices through
the layout: outputs stay bitwise identical (padding_idx follows its row; offsets,
per_sample_weights, max_norm and tied weights need nothing).  ``client.relayout(FILE)``
from any thread queues another layout; the next forward applies it before reading
(lookups never see a half-moved table), and ``client.last_relayout_s`` says what that
pause was.  A layout for another model (other table names, rows or row sizes) is
refused before the model changes.

``client_kw`` goes to recmg.client.Client: ``shm_dir`` (default: $RECMG_SHM_DIR, else
/dev/shm/recmg where packaging created it, else /dev/shm; recmgd must look in the same
directory), ``group``, ``key_capacity``, ``if_unavailable="run-uninstrumented"``.

Refused, with a ValueError naming the module, before anything in the model changes:
weights not on the CPU (recmg places host memory pages), quantized or other embedding
modules it does not know, a model instrumented already, and a segment name this
process already uses.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
from torch import nn

from recmg.capture import segment as seg
from recmg.client import Client, _load_layout, alloc_table
from recmg.rowlayout import format as lf

_SUPPORTED = (nn.EmbeddingBag, nn.Embedding)
_DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
           torch.bfloat16: "uint16"}  # numpy has no bfloat16: same 2-byte words
_MARK = "_recmg_client_name"


def _call_indices(module: nn.Module, args: tuple, kwargs: dict) -> np.ndarray:
    """Rows one call reads: the input (1-D with offsets or 2-D bags), flattened, less
    an EmbeddingBag's padding_idx (excluded from the reduction, so never read)."""
    ix = args[0] if args else kwargs.get("input")
    if ix is None:
        raise ValueError(f"recmg: {type(module).__name__} called without an input")
    rows = ix.detach().reshape(-1).cpu().numpy()
    pad = getattr(module, "padding_idx", None)
    if isinstance(module, nn.EmbeddingBag) and pad is not None:
        rows = rows[rows != pad]
    return rows


def _to_positions(client: Client, i: int, module: nn.Module, args: tuple, kwargs: dict):
    """A lookup's rows -> their positions under the client's layout (same dtype)."""
    arr = client.position_array(i)
    if arr is None:  # no layout (yet)
        return None
    inv = torch.from_numpy(arr)
    if args:
        return (inv[args[0]].to(args[0].dtype),) + tuple(args[1:]), kwargs
    if kwargs.get("input") is not None:
        return args, {**kwargs, "input": inv[kwargs["input"]].to(kwargs["input"].dtype)}
    return None


def _check(model: nn.Module, name: str, shm_dir: str) -> list[tuple[str, nn.Module]]:
    """The embedding modules to instrument, or a ValueError before any change."""
    if getattr(model, _MARK, None) is not None:
        raise ValueError(f"the model is instrumented already (segment name "
                         f"{getattr(model, _MARK)!r}); instrument it once")
    if os.path.exists(os.path.join(shm_dir, seg.segment_name(name, os.getpid()))):
        raise ValueError(f"this process has a capture segment named {name!r} already; "
                         "give each instrumented model its own name")
    mods = []
    for mname, m in model.named_modules():
        if isinstance(m, _SUPPORTED):
            w = m.weight
            if w.device.type != "cpu":
                raise ValueError(f"{mname or 'model'}: weight on {w.device}; recmg places "
                                 "host memory pages, so instrument a CPU model")
            if w.is_quantized or w.dtype not in _DTYPES:
                raise ValueError(f"{mname or 'model'}: weight dtype {w.dtype} is not supported "
                                 f"(supported: {', '.join(map(str, _DTYPES))})")
            if w.dim() != 2 or w.layout != torch.strided:
                raise ValueError(f"{mname or 'model'}: need a dense 2-D weight")
            mods.append((mname, m))
        elif "embedding" in type(m).__name__.lower():
            raise ValueError(f"{mname}: {type(m).__module__}.{type(m).__name__} is not "
                             "supported (only nn.Embedding and nn.EmbeddingBag with float "
                             "weights; quantized embeddings are refused)")
    if not mods:
        raise ValueError("the model has no nn.Embedding or nn.EmbeddingBag")
    return mods


class _Deferred:
    """Relayouts asked from any thread, applied by the next forward before it reads."""

    def __init__(self, client: Client, moved):
        self.client, self.moved, self.queue = client, moved, []
        self.apply_now = client.relayout  # the client's own: moves rows at once

    def ask(self, layout) -> float:
        """Checked now (a bad layout raises here); applied by the next forward."""
        lay = _load_layout(layout)
        lf.match(lay, [(n, a.shape[0], a.shape[1] * a.itemsize)
                       for n, a in self.client.tables.items()], "the model")
        self.queue.append(lay)
        return 0.0

    def run(self) -> None:
        while self.queue:
            lay = self.queue.pop(0)
            if self.client.layout is None or lay.id != self.client.layout.id:
                self.apply_now(lay)
                self.moved()


def instrument(model: nn.Module, name: str, layout=None, **client_kw) -> Client:
    """Move embedding weights into registered memory and record lookups per forward;
    ``layout``: a row layout applied to the tables (see above)."""
    mods = _check(model, name, client_kw.get("shm_dir") or seg.default_dir())
    # one table per distinct weight: tied modules share it
    table_of: dict[int, int] = {}
    specs, weights = [], []
    for mname, m in mods:
        key = id(m.weight)
        if key not in table_of:
            table_of[key] = len(specs)
            w = m.weight.detach()
            # the array's base is its mmap, so the memory lives as long as the weight
            arr, _ = alloc_table(w.shape[0], w.shape[1], _DTYPES[w.dtype])
            specs.append((mname or "embedding", arr))
            weights.append((w, arr, m.weight.requires_grad))
    params = []
    for w, arr, grad in weights:
        t = torch.from_numpy(arr)
        if w.dtype == torch.bfloat16:
            t = t.view(torch.bfloat16)
        t.copy_(w)  # the model still reads its own weights: nothing has changed yet
        params.append(nn.Parameter(t, requires_grad=grad))
    # the layout moves the rows of the copies (a LayoutError leaves the model as it was)
    client = Client(name, specs, layout=layout, **client_kw)
    calls: list[list[np.ndarray]] = [[] for _ in specs]
    pads = [(m, table_of[id(m.weight)], m.padding_idx) for _, m in mods
            if getattr(m, "padding_idx", None) is not None]

    def move_pads() -> None:  # a padding row is excluded wherever it now is
        for m, i, pad in pads:
            m.padding_idx = int(client.positions(i, pad))

    move_pads()
    deferred = _Deferred(client, move_pads)
    client.relayout = deferred.ask
    for _, m in mods:
        i = table_of[id(m.weight)]
        m.weight = params[i]

        def pre_hook(module, args, kwargs, i=i):
            calls[i].append(_call_indices(module, args, kwargs))

        m.register_forward_pre_hook(pre_hook, with_kwargs=True)
        # first: every later hook and the lookup itself see positions
        m.register_forward_pre_hook(functools.partial(_to_positions, client, i),
                                    with_kwargs=True, prepend=True)
    empty = np.zeros(0, np.int64)

    def root_pre_hook(module, args):
        deferred.run()  # at a batch boundary: no lookup sees a half-moved table
        for c in calls:  # a forward that raised left its calls behind
            c.clear()

    def root_hook(module, args, output):
        client.record([np.concatenate(c) if len(c) > 1 else (c[0] if c else empty)
                       for c in calls])
        for c in calls:
            c.clear()

    # first among the root's pre-hooks: when the model is itself an embedding module,
    # its own pre-hook (above) collects the call, and clearing after it recorded 0 keys
    model.register_forward_pre_hook(root_pre_hook, prepend=True)
    model.register_forward_hook(root_hook)
    setattr(model, _MARK, name)
    return client
