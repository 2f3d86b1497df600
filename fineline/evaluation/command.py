"""`fineline eval`: score checkpoints on downstream tasks.

  fineline eval --checkpoint PATH --tasks hellaswag,arc_easy --limit 200 --num_fewshot 0 \\
      --data_dir DIR --output results.json
  fineline eval --checkpoints RUN_DIR|HF_SERIES_DIR|LIST_FILE|CKPT … --output series.jsonl
  fineline eval --hf_repo LLM360/Amber --revisions ckpt_000:ckpt_359:10 --output amber.jsonl
  fineline eval --hf_repos 'm-a-p/Amber-Reproduce-*' --tokenizer REPO_OR_DIR --output r.jsonl
  fineline eval --checkpoint PATH --mesh data=2,fsdp=4 [--multihost] …

PATH is a fineline checkpoint or a Hugging Face LLaMA directory (converted in memory). The
tokenizer is <ckpt>/tokenizer/ (or MODEL_DIR/tokenizer/ for a run's checkpoint, or the HF
directory itself) unless --tokenizer names one. Tasks are looked up in seqio's registry
after importing --task_modules. A series writes one record per checkpoint and resumes.

With `--mesh` (or a `--gin_file` such as mesh/tpu_v4_8.gin) the parameters are sharded
by the model's logical axes and every batch is split over the mesh's data axes, so a
model too large for one device can be scored; with `--multihost` every host runs the same
command on the same records, and only process 0 writes files.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import os

from fineline import cache
from fineline import fileio
from fineline import ginconf
from fineline import multihost
from fineline.evaluation import series as series_lib
from fineline.evaluation import tasks as task_lib
from fineline.errors import UserError

DEFAULT_TASKS = ("hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande", "boolq",
                 "openbookqa", "sciq")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  which = parser.add_mutually_exclusive_group(required=True)
  which.add_argument("--checkpoint", help="a fineline checkpoint or a Hugging Face LLaMA dir")
  which.add_argument("--checkpoints", nargs="+", metavar="PATH",
                     help="run dirs, dirs of checkpoints, list files or checkpoints")
  which.add_argument("--hf_repo", help="a Hub repository whose revisions (--revisions) are "
                                       "the series, downloaded one at a time")
  which.add_argument("--hf_repos", nargs="+", metavar="REPO",
                     help="Hub repositories (or patterns such as 'm-a-p/Amber-Reproduce-*'), "
                          "one checkpoint each")
  parser.add_argument("--revisions", default=None,
                      help="with --hf_repo: FIRST:LAST[:STRIDE] (inclusive, e.g. "
                           "ckpt_000:ckpt_359:10) or a comma list")
  parser.add_argument("--keep", action="store_true",
                      help="keep downloaded hub checkpoints in the cache after scoring")
  parser.add_argument("--tokens_per_step", type=float, default=None,
                      help="hub series: tokens = step in the revision name × this")
  parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                      help="comma-separated task names (default: %(default)s)")
  parser.add_argument("--num_fewshot", type=int, default=None,
                      help="few-shot examples for every task (default: each task's own)")
  parser.add_argument("--limit", type=int, default=None, help="first N documents per task")
  parser.add_argument("--num_samples", type=int, default=None,
                      help="generations per problem for pass@k (code tasks; default 1, "
                           "greedy)")
  parser.add_argument("--temperature", type=float, default=None,
                      help="sampling temperature with --num_samples (default 0.2)")
  parser.add_argument("--top_p", type=float, default=None,
                      help="nucleus sampling mass with --num_samples (default 0.95)")
  parser.add_argument("--data_dir", default=None,
                      help="evaluation data (default: $FINELINE_DATA_DIR, else "
                           "~/.cache/fineline/eval_data; fill it with tools/get_eval_data.sh)")
  parser.add_argument("--output", required=True,
                      help="result record (JSON) or, with --checkpoints, records (JSONL)")
  parser.add_argument("--samples", default=None,
                      help="also write per-request log-likelihoods / generations (JSONL)")
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--max_length", type=int, default=None,
                      help="context window for scoring (default: the model's)")
  parser.add_argument("--tokenizer", default=None,
                      help="tokenizer file or directory (hub series: or a Hub repository)")
  parser.add_argument("--dtype", default=None, help="parameter dtype for HF checkpoints")
  parser.add_argument("--model", default=None, help="model name for the record")
  parser.add_argument("--step", type=int, default=None, help="step for the record")
  parser.add_argument("--tokens", type=int, default=None, help="tokens seen for the record")
  parser.add_argument("--task_modules", default=",".join(task_lib.DEFAULT_TASK_MODULES),
                      help="modules that register the tasks (default: %(default)s)")
  parser.add_argument("--quiet", action="store_true", help="no progress bars")
  parser.add_argument("--mesh", default=None, metavar="AXIS=SIZE,…",
                      help="shard the model and split batches over a device mesh, e.g. "
                           "data=2,fsdp=4 (axes data, fsdp, tensor; one size may be -1; "
                           "the sizes multiply to the device count)")
  ginconf.add_gin_arguments(parser)
  multihost.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)  # seqio's per-task chatter
  names = [t.strip() for t in args.tasks.split(",") if t.strip()]
  if args.num_samples is not None and args.num_samples < 1:
    raise UserError(f"--num_samples must be at least 1, got {args.num_samples}")
  if args.temperature is not None and args.temperature < 0:
    raise UserError(f"--temperature must be >= 0, got {args.temperature}")
  if args.top_p is not None and not 0 < args.top_p <= 1:
    raise UserError(f"--top_p must be in (0, 1], got {args.top_p}")
  settings = task_lib.Settings(data_dir=args.data_dir, num_fewshot=args.num_fewshot,
                               limit=args.limit, num_samples=args.num_samples,
                               temperature=args.temperature, top_p=args.top_p)
  modules = [m.strip() for m in args.task_modules.split(",") if m.strip()]
  multihost.initialize(args)
  if _writes():  # the other hosts never touch their --output
    fileio.check_access(fileio.resolve(args.output).parent, "--output", write=True)
  args.device_mesh = _mesh(args)
  cache.enable_compilation_cache()
  first = None
  if args.checkpoint:
    path = os.fspath(fileio.check_access(args.checkpoint, "--checkpoint"))
    if not (series_lib.is_fineline_checkpoint(path) or series_lib.is_hf_checkpoint(path)):
      raise FileNotFoundError(f"--checkpoint {path}: neither a fineline checkpoint (meta/) nor "
                              "a Hugging Face LLaMA directory (config.json); for a run "
                              "directory or a series use --checkpoints")
    ckpt = series_lib.discover([path])[0]
    ckpt = series_lib.Checkpoint(ckpt.path, _first(args.step, ckpt.step),
                                 _first(args.tokens, ckpt.tokens))
    first = _load_in_background(ckpt.path, args)
  elif args.checkpoints:
    checkpoints = series_lib.discover(args.checkpoints)
  if not (args.hf_repo or args.hf_repos) and (args.revisions or args.keep
                                              or args.tokens_per_step):
    raise UserError("--revisions, --keep and --tokens_per_step apply to --hf_repo/--hf_repos")
  if args.hf_repo or args.hf_repos:
    from fineline.evaluation import hub  # pylint: disable=import-outside-toplevel
    client = hub.Client()
    checkpoints = hub.plan(client, repo=args.hf_repo, revisions=args.revisions,
                           repos=args.hf_repos, tokens_per_step=args.tokens_per_step)
  from fineline.evaluation import suite as suite_lib  # pylint: disable=import-outside-toplevel
  suite = suite_lib.TaskSuite(names, settings, modules)
  if not suite.prepared:
    raise FileNotFoundError("no task could be prepared:\n  " + "\n  ".join(
        f"{t}: {e}" for t, e in suite.errors.items()))
  one = _Evaluate(suite, args)
  if args.checkpoint:
    record = one(ckpt, loaded=first.result())
    if _writes():
      fileio.write_json(args.output, record, indent=2)
      _print_summary(record)
    return 0 if not record.get("errors") else 1
  if args.checkpoints:
    n = series_lib.evaluate_series(checkpoints, args.output, one, progress=not args.quiet)
  else:
    n = hub.evaluate_with(one, checkpoints, args, client)
  if _writes():
    print(f"evaluated {n} checkpoint(s); {len(checkpoints) - n} already in {args.output}")
  return 0


class _Evaluate:
  """checkpoint → record, reusing one scorer while the architecture stays the same."""

  def __init__(self, suite, args):
    self.suite, self.args, self.scorer, self.key = suite, args, None, None

  def __call__(self, ckpt: series_lib.Checkpoint, tokenizer: str | None = None,
               name: str | None = None, loaded=None) -> dict:
    from fineline.evaluation import records  # pylint: disable=import-outside-toplevel
    params, cfg, meta, tokenizer = loaded or load_checkpoint(
        ckpt.path, tokenizer=tokenizer or self.args.tokenizer, dtype=self.args.dtype,
        mesh=self.args.device_mesh)
    scorer = self._scorer(params, cfg, tokenizer)
    samples = [] if self.args.samples else None
    results = self.suite.run(scorer, step=ckpt.step, progress=not self.args.quiet,
                             samples=samples)
    if samples is not None and _writes():
      rows = [{"checkpoint": name or ckpt.path, **row} for row in samples]
      if self.args.checkpoint:
        fileio.write_text(self.args.samples, "".join(json.dumps(r) + "\n" for r in rows))
      else:
        log_file = fileio.JsonlLog(self.args.samples)
        for row in rows:
          log_file.append(row)
        log_file.close()
    return records.make_record(
        results, model=self.args.model or meta.get("model") or ckpt.path,
        checkpoint=ckpt.path, step=ckpt.step, tokens=ckpt.tokens,
        errors=self.suite.last_errors)

  def _scorer(self, params, cfg, tokenizer: str):
    from fineline import tokenizers  # pylint: disable=import-outside-toplevel
    from fineline.evaluation.scorer import Scorer  # pylint: disable=import-outside-toplevel
    key = (json.dumps(cfg.to_dict(), sort_keys=True), os.fspath(fileio.resolve(tokenizer)))
    if self.scorer is None or key != self.key:
      mesh = self.args.device_mesh
      self.scorer = Scorer(cfg, params, tokenizers.load_tokenizer(tokenizer),
                           batch_size=self.args.batch_size, max_length=self.args.max_length,
                           mesh=mesh, shardings=param_shardings(mesh, cfg))
      self.key = key
    self.scorer.params = params  # the jitted functions stay compiled across checkpoints
    return self.scorer


def _mesh(args):
  """The device mesh of --mesh / --gin_file (one device without either, or all devices
  data-parallel with only --multihost); a bad one is named before any work starts."""
  if not (args.mesh or args.gin_file or args.gin_bindings or args.multihost
          or args.coordinator_address):
    return None
  import jax  # pylint: disable=import-outside-toplevel
  from fineline import partitioning  # pylint: disable=import-outside-toplevel  (registers mesh_axes)
  bindings = list(args.gin_bindings)
  if args.mesh:  # after the files: --mesh wins
    bindings += partitioning.mesh_bindings(partitioning.parse_mesh(args.mesh))
  ginconf.parse(args.gin_file, bindings, args.gin_search_path)
  try:
    mesh = partitioning.make_mesh()
    logging.info("scoring on a mesh of %s (%d devices, %d processes)", dict(mesh.shape),
                 mesh.size, jax.process_count())
    return mesh
  except ValueError as e:
    given = (f"--mesh {args.mesh}" if args.mesh else
             "--gin_file " + ",".join(args.gin_file) if args.gin_file else "the mesh")
    raise UserError(f"{given}: {e}") from None
  finally:
    # The mesh is all that eval reads from gin; the modules imported later register their
    # configurables, which a locked config would refuse.
    import gin  # pylint: disable=import-outside-toplevel
    gin.clear_config()


def param_shardings(mesh, cfg):
  """Where each parameter lives on `mesh` (None without one): by its logical axes."""
  if mesh is None:
    return None
  from fineline import partitioning  # pylint: disable=import-outside-toplevel
  from fineline.models import llama  # pylint: disable=import-outside-toplevel
  return partitioning.param_shardings(mesh, llama.abstract_params(cfg))


def load_checkpoint(path: str, *, tokenizer: str | None = None, dtype: str | None = None,
                    mesh=None):
  """(params, LlamaConfig, meta, tokenizer path) of a fineline or HF checkpoint directory.
  The params are on the default device; with `mesh`, a fineline checkpoint's are restored
  straight into their shards and an HF one's stay on the host (the scorer places them)."""
  import jax  # pylint: disable=import-outside-toplevel
  from fineline import checkpointing  # pylint: disable=import-outside-toplevel
  if series_lib.is_fineline_checkpoint(path):
    shardings = None
    if mesh is not None:
      from fineline.models.config import LlamaConfig  # pylint: disable=import-outside-toplevel
      shardings = param_shardings(
          mesh, LlamaConfig.from_dict(checkpointing.read_meta(path)["model_config"]))
    params, cfg, meta = checkpointing.load_params(path, shardings=shardings)
    from fineline import tokenizers  # pylint: disable=import-outside-toplevel
    tokenizer_dir = tokenizers.find_tokenizer_dir(path)
  elif series_lib.is_hf_checkpoint(path):
    from fineline.convert import hf  # pylint: disable=import-outside-toplevel
    # Safetensors are memory-mapped: a bucket's HF directory is read from a local copy.
    params, cfg, tokenizer_dir = hf.load_hf_checkpoint(fileio.download(path), dtype=dtype)
    params, meta = (jax.device_put(params) if mesh is None else params), {}
  else:
    raise FileNotFoundError(f"{path}: neither a fineline checkpoint (meta/) nor a Hugging "
                            "Face checkpoint (config.json)")
  tokenizer = tokenizer or tokenizer_dir
  if not tokenizer:
    raise FileNotFoundError(f"{path}: no tokenizer found beside the checkpoint; pass "
                            "--tokenizer")
  return params, cfg, meta, tokenizer


def _load_in_background(path: str, args) -> concurrent.futures.Future:
  """`load_checkpoint(path)` on a thread, overlapping the task preparation (reading and
  rendering documents) that the main thread does meanwhile. The modules
  it needs are imported here first: two threads importing the same packages could each
  wait on a module the other is initialising."""
  import jax  # pylint: disable=import-outside-toplevel,unused-import
  from fineline import checkpointing  # pylint: disable=import-outside-toplevel,unused-import
  from fineline.convert import hf  # pylint: disable=import-outside-toplevel,unused-import
  pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="load-checkpoint")
  future = pool.submit(load_checkpoint, path, tokenizer=args.tokenizer, dtype=args.dtype,
                       mesh=args.device_mesh)
  pool.shutdown(wait=False)
  return future


def _writes() -> bool:
  """Whether this process writes the output files: every host scores the same records,
  process 0 alone writes them."""
  import jax  # pylint: disable=import-outside-toplevel
  return jax.process_index() == 0


def _first(a, b):
  return a if a is not None else b


def _print_summary(record: dict) -> None:
  for task, m in record["tasks"].items():
    metric = m.get("primary_metric", "acc")
    value, err = m.get(metric), m.get(f"{metric}_stderr")
    err_text = f" ± {err:.4f}" if isinstance(err, float) else ""
    print(f"{task:<16} {metric:<14} {value:.4f}{err_text}  (n={m['n']}, "
          f"{m['num_fewshot']}-shot, {m['capability']})")
  for task, error in record.get("errors", {}).items():
    print(f"{task:<16} FAILED: {error}")
