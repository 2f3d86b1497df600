"""Hugging Face LLaMA ↔ fineline: tensor names, layouts, config, whole-directory conversion.

Layouts (HF `nn.Linear` weights are out×in; fineline keeps in×out with heads split out):
  model.embed_tokens.weight        V×D        ↔ embedding                 V×D
  model.layers.i.self_attn.q_proj  (H·Dh)×D   ↔ layers_i/attn/q           D×H×Dh  = W.T.reshape
  ….k_proj / v_proj                (K·Dh)×D   ↔ layers_i/attn/{k,v}       D×K×Dh
  ….o_proj                         D×(H·Dh)   ↔ layers_i/attn/o           H×Dh×D  = W.T.reshape
  model.layers.i.mlp.{gate,up}_proj F×D       ↔ layers_i/mlp/{gate,up}    D×F     = W.T
  model.layers.i.mlp.down_proj     D×F        ↔ layers_i/mlp/down         F×D     = W.T
  ….input_layernorm / post_attention_layernorm ↔ layers_i/{attn,mlp}_norm/scale
  model.norm.weight                            ↔ final_norm/scale
  lm_head.weight                   V×D        ↔ lm_head                   D×V     (untied only)

No q/k permutation is needed: HF's LLaMA applies rotary embedding in the half-split
(`rotate_half`) layout, and so does fineline. (Meta's original weights and EasyLM use
interleaved pairs; converters from those permute q/k rows, converters from HF must not.)

Conversions stream tensor by tensor, so peak memory stays near one copy of the model, and
write into a staging directory that `fileio.atomic_output` publishes only when complete: on
any error nothing is left at the output path. Input and output may be URLs (gs://…).
Reading, transposing and writing overlap: an import hands Orbax the checkpoint's tree of
`PendingArray`s up front and fills them in as safetensors are read; an export restores the
checkpoint a layer at a time in a background thread and writes each complete safetensors
shard in another.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import os
import re
import shutil
import threading

import numpy as np
from flax import traverse_util
from tqdm import tqdm

from fineline import checkpointing, fileio, tokenizers
from fineline.convert import architectures, weights_io
from fineline.convert.transpose import transpose
from fineline.models import presets
from fineline.models.config import LlamaConfig
from fineline.errors import UserError

# Buffers some older PyTorch checkpoints carry; recomputed from the config, not weights.
_IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.(inv_freq|cos_cached|sin_cached)")
_PROGRESS_MIN_TENSORS = 8
DEFAULT_MAX_SHARD_BYTES = 2 << 30


def tensor_layout(cfg: LlamaConfig) -> dict[str, tuple[tuple[str, ...], tuple[int, ...], str]]:
  """HF tensor name → (fineline path, HF shape, kind), in HF's order. kind: how the HF
  matrix maps onto the fineline array (see `to_fineline` / `to_hf`)."""
  D, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
  H, K, Dh = cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
  layout = {"model.embed_tokens.weight": (("embedding",), (V, D), "same")}
  for i in range(cfg.num_layers):
    hf, ours = f"model.layers.{i}.", f"layers_{i}"
    layout.update({
        hf + "self_attn.q_proj.weight": ((ours, "attn", "q"), (H * Dh, D), "in_heads"),
        hf + "self_attn.k_proj.weight": ((ours, "attn", "k"), (K * Dh, D), "in_heads"),
        hf + "self_attn.v_proj.weight": ((ours, "attn", "v"), (K * Dh, D), "in_heads"),
        hf + "self_attn.o_proj.weight": ((ours, "attn", "o"), (D, H * Dh), "heads_out"),
        hf + "mlp.gate_proj.weight": ((ours, "mlp", "gate"), (F, D), "transpose"),
        hf + "mlp.up_proj.weight": ((ours, "mlp", "up"), (F, D), "transpose"),
        hf + "mlp.down_proj.weight": ((ours, "mlp", "down"), (D, F), "transpose"),
        hf + "input_layernorm.weight": ((ours, "attn_norm", "scale"), (D,), "same"),
        hf + "post_attention_layernorm.weight": ((ours, "mlp_norm", "scale"), (D,), "same"),
    })
  layout["model.norm.weight"] = (("final_norm", "scale"), (D,), "same")
  if not cfg.tie_embeddings:
    layout["lm_head.weight"] = (("lm_head",), (V, D), "transpose")
  return layout


def to_fineline(w: np.ndarray, kind: str, cfg: LlamaConfig) -> np.ndarray:
  Dh = cfg.resolved_head_dim
  if kind == "same":
    return w
  if kind == "transpose":
    return transpose(w)
  if kind == "in_heads":  # (N·Dh)×D → D×N×Dh
    return transpose(w).reshape(w.shape[1], w.shape[0] // Dh, Dh)
  if kind == "heads_out":  # D×(H·Dh) → H×Dh×D
    return transpose(w).reshape(w.shape[1] // Dh, Dh, w.shape[0])
  raise UserError(kind)


def to_hf(x: np.ndarray, kind: str) -> np.ndarray:
  if kind == "same":
    return x
  if kind == "transpose":
    return transpose(x)
  if kind == "in_heads":  # D×N×Dh → (N·Dh)×D
    return transpose(x.reshape(x.shape[0], -1))
  if kind == "heads_out":  # H×Dh×D → D×(H·Dh)
    return transpose(x.reshape(-1, x.shape[-1]))
  raise UserError(kind)


def read_hf_config(directory: str) -> tuple[dict, LlamaConfig]:
  path = os.path.join(directory, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no config.json in the Hugging Face checkpoint directory")
  try:
    with open(path) as f:
      hf = json.load(f)
  except ValueError as e:
    raise UserError(f"{path}: not valid JSON ({e})") from e
  try:
    return hf, presets.from_hf_config(architectures.llama_config(hf))
  except (KeyError, TypeError) as e:
    raise UserError(f"{path}: missing or malformed field {e}") from e
  except ValueError as e:
    raise UserError(f"{path}: {e}") from e


def load_hf_checkpoint(directory: str, dtype: str | None = None):
  """An HF LLaMA directory imported in memory: (params, LlamaConfig, tokenizer_dir | None).

  params: host numpy arrays, unscanned tree, in the stored dtype unless `dtype` is given
  (the config's `param_dtype` says which). tokenizer_dir is `directory` when it holds
  tokenizer files.
  """
  hf, cfg = read_hf_config(directory)
  params, cfg = _read_params(directory, hf, cfg, weights_io.as_dtype(dtype))
  return params, cfg, (directory if tokenizers.tokenizer_files(directory) else None)


def _weight_files(directory: str, hf: dict, cfg: LlamaConfig):
  """The directory's weights under HF LLaMA's names (Baichuan's and Yi's are renamed)."""
  return architectures.weight_files(weights_io.WeightFiles(directory), hf, cfg)


def _read_params(directory: str, hf: dict, cfg: LlamaConfig, dtype):
  files = _weight_files(directory, hf, cfg)
  layout = tensor_layout(cfg)
  params = traverse_util.unflatten_dict(
      {tuple(path): x for path, x in _converted(directory, files, layout, cfg, dtype)})
  param_dtype = weights_io.dtype_name(params["embedding"].dtype)
  return params, cfg.replace(param_dtype=param_dtype)


def _check_names(directory: str, files: weights_io.WeightFiles, layout, cfg: LlamaConfig):
  """name → file of the weights, once they are known to be the ones config.json implies."""
  available = files.tensor_names()
  tied_head = cfg.tie_embeddings and "lm_head.weight" in available
  missing = [n for n in layout if n not in available]
  extra = [n for n in available if n not in layout and not _IGNORED.fullmatch(n)
           and not (tied_head and n == "lm_head.weight")]
  if missing or extra:
    parts = []
    if missing:
      parts.append(f"missing tensor(s) {_few(missing)}")
    if extra:
      parts.append(f"unexpected tensor(s) {_few(extra)} (in {available[extra[0]]})")
    raise UserError(f"{directory}: weights do not match config.json "
                     f"({cfg.num_layers} layers, tie_word_embeddings={cfg.tie_embeddings}): "
                     + "; ".join(parts))
  return available


def _converted(directory: str, files: weights_io.WeightFiles, layout, cfg: LlamaConfig, dtype):
  """(fineline path, array) for every tensor, read in a background thread and converted
  here, the embedding last: a tied model's lm_head.weight must equal it first."""
  available = _check_names(directory, files, layout, cfg)
  tied_head = cfg.tie_embeddings and "lm_head.weight" in available
  embedding = head_of_tied = None
  progress = tqdm(total=len(layout), desc="reading HF weights", unit="tensor",
                  disable=len(layout) <= _PROGRESS_MIN_TENSORS)
  wanted = lambda n: n in layout or (tied_head and n == "lm_head.weight")
  with progress, contextlib.closing(weights_io.prefetched(files.iter_tensors(wanted))) as tensors:
    for name, w in tensors:
      if name not in layout:  # lm_head of a tied model: must be the embedding itself
        head_of_tied = w
        continue
      path, shape, kind = layout[name]
      _check_shape(files, available, name, w.shape, shape)
      if dtype is not None and w.dtype != dtype:
        w = w.astype(dtype)
      if path == ("embedding",):
        embedding = w
      else:
        yield path, to_fineline(w, kind, cfg)
      del w
      progress.update()
  if head_of_tied is not None and not np.array_equal(head_of_tied.astype(embedding.dtype),
                                                     embedding):
    raise UserError(f"{directory}: config.json ties the embeddings but lm_head.weight differs "
                     "from model.embed_tokens.weight")
  yield ("embedding",), embedding


def _check_shape(files, available, name, got, want) -> None:
  if tuple(got) != want:
    raise UserError(f"{files.path(available[name])}: tensor {name!r} has shape "
                     f"{tuple(got)}, expected {want} from config.json")


def _fineline_shape(hf_shape: tuple[int, ...], kind: str, cfg: LlamaConfig) -> tuple[int, ...]:
  """The shape `to_fineline` gives a tensor of `hf_shape`."""
  if kind == "same":
    return hf_shape
  (rows, cols), Dh = hf_shape, cfg.resolved_head_dim
  return {"transpose": (cols, rows), "in_heads": (cols, rows // Dh, Dh),
          "heads_out": (cols // Dh, Dh, rows)}[kind]


@contextlib.contextmanager
def _gc_paused():
  """Python's cycle collector keeps rescanning the many objects that jax and Orbax hold
  (a twentieth of a conversion's time), and a conversion leaves no cycles to collect."""
  enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if enabled:
      gc.enable()


@_gc_paused()
def import_hf(src_dir: str, out_ckpt: str, dtype: str | None = None,
              overwrite: bool = False) -> LlamaConfig:
  """Converts an HF LLaMA directory into a fineline checkpoint (params, meta, tokenizer/)."""
  fileio.check_output(out_ckpt, overwrite)
  source = {"hf_dir": os.fspath(fileio.check_access(src_dir, "--from_hf"))}
  src_dir = fileio.download(src_dir)  # safetensors are memory-mapped: a local copy
  weights_io.reuse_freed_memory()
  hf, cfg = read_hf_config(src_dir)
  cast = weights_io.as_dtype(dtype)
  files = _weight_files(src_dir, hf, cfg)
  layout = tensor_layout(cfg)
  specs = files.tensor_specs()
  if specs is None:  # PyTorch .bin: dtypes are known only once read
    params, cfg = _read_params(src_dir, hf, cfg, cast)
  else:  # the checkpoint is written while the weights are still being read
    available = _check_names(src_dir, files, layout, cfg)
    pending = {}
    for name, (path, shape, kind) in layout.items():
      _check_shape(files, available, name, specs[name][1], shape)
      pending[tuple(path)] = checkpointing.PendingArray(_fineline_shape(shape, kind, cfg),
                                                        cast or specs[name][0])
    params = traverse_util.unflatten_dict(pending)
    cfg = cfg.replace(param_dtype=weights_io.dtype_name(params["embedding"].dtype))
  with fileio.atomic_output(out_ckpt, overwrite=overwrite) as staging:
    filled = (contextlib.nullcontext(params) if specs is None
              else _filling(params, _converted(src_dir, files, layout, cfg, cast)))
    with filled as params:
      checkpointing.save_params(staging, params, cfg, step=0, tokens=0, compress=False,
                                source=source)
    del params
    tokenizer_files = tokenizers.tokenizer_files(src_dir)
    if tokenizer_files:
      os.makedirs(os.path.join(staging, "tokenizer"))
      for fname in tokenizer_files:
        shutil.copy2(os.path.join(src_dir, fname), os.path.join(staging, "tokenizer", fname))
  return cfg


@contextlib.contextmanager
def _filling(pending_tree: dict, arrays):
  """Sets the PendingArray leaves of `pending_tree` from `arrays` ((path, array) pairs) in a
  background thread while the block runs; an error there is the block's error."""
  pending = traverse_util.flatten_dict(pending_tree)
  errors: list[BaseException] = []
  stop = threading.Event()

  def fill():
    try:
      with contextlib.closing(arrays):
        for path, array in arrays:
          if stop.is_set():
            return
          pending[tuple(path)].set(array)
          del array
    except BaseException as e:  # pylint: disable=broad-except
      errors.append(e)
    finally:  # nothing may wait forever on a leaf that will never come
      for leaf in pending.values():
        leaf.fail(errors[0] if errors else RuntimeError("weights ended early"))

  thread = threading.Thread(target=fill, name="hf-import", daemon=True)
  thread.start()
  try:
    yield pending_tree
  except BaseException:
    stop.set()
    thread.join()
    if errors:
      raise errors[0] from None
    raise
  thread.join()
  if errors:
    raise errors[0]


@_gc_paused()
def export_hf(ckpt: str, out_dir: str, dtype: str | None = None, overwrite: bool = False,
              max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> LlamaConfig:
  """Writes a fineline checkpoint as an HF LLaMA directory: config.json,
  generation_config.json, safetensors shards + index, tokenizer files when known."""
  fileio.check_output(out_dir, overwrite)
  ckpt = os.fspath(fileio.check_access(ckpt, "--to_hf"))
  weights_io.reuse_freed_memory()
  cfg = LlamaConfig.from_dict(checkpointing.read_meta(ckpt)["model_config"])
  cast = weights_io.as_dtype(dtype)
  layout = tensor_layout(cfg)
  by_entry: dict[str, list] = {}  # top-level parameter entry → its HF tensors, in HF order
  for name, (path, shape, kind) in layout.items():
    by_entry.setdefault(path[0], []).append((name, path, shape, kind))
  # Entry by entry (a layer at a time): the checkpoint is read in a background thread
  # while the previous entry is transposed and a complete shard is written in another.
  entries = weights_io.prefetched(checkpointing.iter_params(ckpt, [[e] for e in by_entry]))
  with fileio.atomic_output(out_dir, overwrite=overwrite) as staging, \
      contextlib.closing(entries):
    os.makedirs(staging)
    first = next(entries)
    out_dtype = cast or _pop(first, ("embedding",), ckpt, keep=True).dtype
    planned = [(name, int(np.prod(shape)) * np.dtype(out_dtype).itemsize)
               for name, (_, shape, _) in layout.items()]
    progress = tqdm(total=len(layout), desc="writing HF weights", unit="tensor",
                    disable=len(layout) <= _PROGRESS_MIN_TENSORS)
    with progress, weights_io.ShardedSafetensorsWriter(staging, planned, max_shard_bytes) as writer:
      for tensors, params in zip([*by_entry.values(), []], itertools.chain([first], entries)):
        for name, path, shape, kind in tensors:
          x = _pop(params, path, ckpt)  # dropped from the tree: the shard writer now owns it
          w = to_hf(x if cast is None else x.astype(cast), kind)
          del x
          if tuple(w.shape) != shape:
            raise UserError(f"{ckpt}: parameter {'/'.join(path)} gives {name!r} of shape "
                             f"{tuple(w.shape)}, expected {shape} from its model_config")
          writer.add(name, w)
          del w
          progress.update()
        leftover = list(traverse_util.flatten_dict(params, sep="/"))
        if leftover:
          raise UserError(f"{ckpt}: parameters with no Hugging Face counterpart: {leftover}")
      writer.close()
    hf_config = presets.to_hf_config(cfg, torch_dtype=weights_io.dtype_name(out_dtype))
    _write_json(os.path.join(staging, "config.json"), hf_config)
    _write_json(os.path.join(staging, "generation_config.json"),
                {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id})
    tokenizer_dir = tokenizers.find_tokenizer_dir(ckpt)
    for fname in tokenizers.tokenizer_files(tokenizer_dir) if tokenizer_dir else ():
      with open(os.path.join(staging, fname), "wb") as f:
        f.write((fileio.resolve(tokenizer_dir) / fname).read_bytes())
  return cfg


def _pop(tree: dict, path: tuple[str, ...], ckpt: str, keep: bool = False):
  try:
    for key in path[:-1]:
      tree = tree[key]
    return np.asarray(tree[path[-1]] if keep else tree.pop(path[-1]))
  except KeyError:
    raise UserError(f"{ckpt}: checkpoint has no parameter {'/'.join(path)}") from None


def _few(names: list[str], n: int = 4) -> str:
  shown = ", ".join(repr(x) for x in names[:n])
  return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def _write_json(path: str, obj) -> None:
  with open(path, "w") as f:
    json.dump(obj, f, indent=2)
    f.write("\n")
