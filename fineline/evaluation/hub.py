"""Released checkpoint series evaluated straight from the Hugging Face Hub.

  fineline eval --hf_repo LLM360/Amber --revisions ckpt_000:ckpt_359:10 …
  fineline eval --hf_repos 'm-a-p/Amber-Reproduce-*' --tokenizer m-a-p/Amber-Reproduce-hkg_amber_hf …

One checkpoint at a time is downloaded into the Hugging Face cache with `huggingface_hub`,
converted in memory, scored, and deleted from the cache (unless `--keep`, and never a
revision that was cached before the run); the next one downloads while the current one is
scored, so the disk holds about two checkpoints. A download is first the small files
(config.json, indexes, tokenizer), so a checkpoint whose architecture fineline cannot read
is recorded as an error without fetching its weights. A failed download is retried, then
recorded as an error for that checkpoint, and the series goes on; a restarted series skips
the checkpoints already scored and tries the failed downloads again. In offline mode
(HF_HUB_OFFLINE=1) the same calls read the cache alone.

Each record's `tokens` comes from the series: LLM360/Amber's `ckpt_NNN` is (NNN + 1) × its
tokens per checkpoint (1259.13B over 360, so ckpt_359 is 1259.13B), a repository or revision
named `…-41.94B` holds 41.94B tokens, Baichuan2's `train_00220B` 220B; `--tokens_per_step`
sets tokens = step × it for revisions named by step (`ckpt_NNN`, `stepNNN`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fnmatch
import logging
import os
import re
import time
from typing import Callable

from fineline.evaluation import series as series_lib
from fineline.errors import UserError

log = logging.getLogger(__name__)

# Series whose revisions are numbered checkpoints: (tokens per checkpoint, checkpoints
# already done at number 0). Amber's ckpt_000 follows the first of its 360 data chunks and
# ckpt_359, the final model, has seen all 1259.13B tokens.
CHECKPOINT_TOKENS = {"LLM360/Amber": (1259.13e9 / 360, 1)}
RETRY_DELAYS_S = (10, 60, 300)  # between download attempts
SMALL_FILES = ["config.json", "*.index.json", "generation_config.json", "tokenizer.model",
               "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "added_tokens.json"]
_NUMBERED = re.compile(r"(.*?)(\d+)(\D*)")
_STEP_NAME = re.compile(r"(?:ckpt|step|checkpoint)[-_]?(\d+)")
# Baichuan2's revisions (train_00220B) and the reproductions' names (…-41.94B, always with
# decimals, unlike a model size such as Yi-34B).
_TOKENS_NAME = re.compile(r"(?:^train_0*(\d+)|-(\d+\.\d+))([BMT])$")


@dataclasses.dataclass(frozen=True)
class HubCheckpoint:
  repo: str
  revision: str | None
  step: int | None = None
  tokens: int | None = None

  @property
  def path(self) -> str:
    """The record's `checkpoint`: the key a restarted series recognises it by."""
    return f"hf://{self.repo}" + (f"@{self.revision}" if self.revision else "")


class Client:
  """The few `huggingface_hub` calls a series needs. Offline, listings come from the cache."""

  def __init__(self, cache_dir: str | None = None, offline: bool | None = None):
    from huggingface_hub import constants  # pylint: disable=import-outside-toplevel
    self.cache_dir = cache_dir or os.environ.get("HF_HUB_CACHE") or None
    self.offline = constants.HF_HUB_OFFLINE if offline is None else offline
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
      self.offline = True

  def _cached_repos(self):
    from huggingface_hub import scan_cache_dir  # pylint: disable=import-outside-toplevel
    try:
      return [r for r in scan_cache_dir(self.cache_dir).repos if r.repo_type == "model"]
    except Exception:  # pylint: disable=broad-except  # no cache yet
      return []

  def revisions(self, repo: str) -> list[str] | None:
    """The repository's branches and tags (None when they cannot be listed)."""
    if self.offline:
      refs = [ref for r in self._cached_repos() if r.repo_id == repo for ref in r.refs]
      return sorted(set(refs)) or None
    from huggingface_hub import HfApi  # pylint: disable=import-outside-toplevel
    try:
      refs = HfApi().list_repo_refs(repo)
    except Exception as e:  # pylint: disable=broad-except
      log.warning("could not list the revisions of %s (%s); using the names as given", repo, e)
      return None
    return sorted({b.name for b in refs.branches} | {t.name for t in refs.tags})

  def repos(self, pattern: str) -> list[str]:
    """Model repositories whose id matches a shell pattern (`owner/Name-*`)."""
    if "*" not in pattern and "?" not in pattern:
      return [pattern]
    if self.offline:
      ids = [r.repo_id for r in self._cached_repos()]
    else:
      from huggingface_hub import HfApi  # pylint: disable=import-outside-toplevel
      owner, _, name = pattern.partition("/")
      ids = [m.id for m in HfApi().list_models(author=owner or None,
                                               search=re.split(r"[*?\[]", name)[0] or None)]
    return sorted(i for i in ids if fnmatch.fnmatchcase(i, pattern))

  def download(self, repo: str, revision: str | None, patterns: list[str]) -> str:
    from huggingface_hub import snapshot_download  # pylint: disable=import-outside-toplevel
    return snapshot_download(repo, revision=revision, cache_dir=self.cache_dir,
                             allow_patterns=patterns, local_files_only=self.offline)

  def is_cached(self, repo: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache  # pylint: disable=import-outside-toplevel
    found = try_to_load_from_cache(repo, "config.json", cache_dir=self.cache_dir,
                                   revision=revision)
    return isinstance(found, str)

  def delete(self, repo: str, revision: str | None) -> None:
    """Removes one revision from the cache (blobs other revisions share stay)."""
    from huggingface_hub import scan_cache_dir  # pylint: disable=import-outside-toplevel
    info = scan_cache_dir(self.cache_dir)
    hashes = [rev.commit_hash for r in info.repos if r.repo_id == repo for rev in r.revisions
              if (revision or "main") in rev.refs or rev.commit_hash == revision]
    if hashes:
      info.delete_revisions(*hashes).execute()


def select_revisions(spec: str, available: list[str] | None, repo: str) -> list[str]:
  """The revisions `spec` names: `FIRST:LAST[:STRIDE]` (inclusive, by the number in the
  names, e.g. ckpt_000:ckpt_359:10 or train_00220B:train_02420B), or a comma list."""
  parts = spec.split(":")
  if len(parts) == 1:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    missing = [n for n in names if available is not None and n not in available]
    if missing:
      raise UserError(f"--revisions: {', '.join(missing)} not among {repo}'s revisions "
                       f"({_summary(available)})")
    return names
  if len(parts) > 3:
    raise UserError(f"--revisions {spec!r}: expected FIRST:LAST[:STRIDE] or a comma list")
  first, last = (_NUMBERED.fullmatch(p) for p in parts[:2])
  if not (first and last) or (first[1], first[3]) != (last[1], last[3]):
    raise UserError(f"--revisions {spec!r}: FIRST and LAST must be names that differ only "
                     "in their number, such as ckpt_000:ckpt_359")
  try:
    stride = int(parts[2]) if len(parts) == 3 else 1
    assert stride > 0
  except (ValueError, AssertionError):
    raise UserError(f"--revisions {spec!r}: STRIDE must be a positive integer") from None
  lo, hi = int(first[2]), int(last[2])
  if available is None:  # unlisted: the names as the range spells them
    return [f"{first[1]}{n:0{len(first[2])}d}{first[3]}" for n in range(lo, hi + 1, stride)]
  picked = []
  for name in available:
    m = _NUMBERED.fullmatch(name)
    if m and (m[1], m[3]) == (first[1], first[3]) and lo <= int(m[2]) <= hi \
        and (int(m[2]) - lo) % stride == 0:
      picked.append((int(m[2]), name))
  if not picked:
    raise UserError(f"--revisions {spec!r} matched none of {repo}'s {len(available)} "
                     f"revisions ({_summary(available)})")
  return [name for _, name in sorted(picked)]


def _summary(names: list[str] | None) -> str:
  if not names:
    return "none listed"
  numbered = sorted((n for n in names if _NUMBERED.fullmatch(n)),
                    key=lambda n: (_NUMBERED.fullmatch(n)[1], int(_NUMBERED.fullmatch(n)[2])))
  others = [n for n in names if n not in numbered]
  shown = numbered if len(numbered) <= 4 else numbered[:2] + ["…"] + numbered[-2:]
  return ", ".join(shown + others)


def checkpoint_for(repo: str, revision: str | None,
                   tokens_per_step: float | None = None) -> HubCheckpoint:
  """A series entry with its step and tokens read from the names (see the module doc)."""
  m = _STEP_NAME.fullmatch(revision or "")
  step = int(m[1]) if m else None
  tokens = None
  per_step, first = (tokens_per_step, 0) if tokens_per_step else CHECKPOINT_TOKENS.get(
      repo, (None, 0))
  if step is not None and per_step:
    tokens = int(round((step + first) * per_step))
  else:
    for name in (revision or "", repo):
      m = _TOKENS_NAME.search(name)
      if m:
        tokens = int(round(float(m[1] or m[2]) * {"M": 1e6, "B": 1e9, "T": 1e12}[m[3]]))
        break
  return HubCheckpoint(repo, revision, step, tokens)


def plan(client: Client, *, repo: str | None = None, revisions: str | None = None,
         repos: list[str] | None = None,
         tokens_per_step: float | None = None) -> list[HubCheckpoint]:
  """The series `--hf_repo REPO --revisions SPEC` or `--hf_repos ID|PATTERN …` names."""
  if repo:
    if not revisions:
      raise UserError("--hf_repo needs --revisions: a comma list, FIRST:LAST[:STRIDE], or main")
    names = select_revisions(revisions, client.revisions(repo), repo)
    return [checkpoint_for(repo, name, tokens_per_step) for name in names]
  ids = []
  for pattern in repos or []:
    found = client.repos(pattern)
    if not found:
      raise UserError(f"--hf_repos {pattern!r} matched no model repository"
                       + (" in the cache (offline)" if client.offline else ""))
    ids.extend(i for i in found if i not in ids)
  out = [checkpoint_for(i, None, tokens_per_step) for i in ids]
  return sorted(out, key=lambda c: (c.tokens is None, c.tokens or 0, c.path))


@dataclasses.dataclass
class Fetched:
  ckpt: HubCheckpoint
  snapshot: str | None = None
  downloaded: bool = False  # by this run: deleted once scored, unless --keep
  error: dict | None = None  # {"download": …} (retried on restart) or {"checkpoint": …}


def fetch(client: Client, ckpt: HubCheckpoint) -> Fetched:
  """Downloads one checkpoint, retrying; errors are returned, not raised."""
  from fineline.convert import hf  # pylint: disable=import-outside-toplevel
  cached = client.is_cached(ckpt.repo, ckpt.revision)
  for attempt in range(len(RETRY_DELAYS_S) + 1):
    try:
      snapshot = client.download(ckpt.repo, ckpt.revision, SMALL_FILES)
      try:
        hf.read_hf_config(snapshot)
      except (ValueError, FileNotFoundError) as e:  # not worth fetching the weights
        return Fetched(ckpt, snapshot, not cached, {"checkpoint": str(e)})
      for weights in _weight_patterns(snapshot):
        snapshot = client.download(ckpt.repo, ckpt.revision, weights)
        if _has_weights(snapshot):
          break
      return Fetched(ckpt, snapshot, not cached)
    except Exception as e:  # pylint: disable=broad-except  # network, hub, disk: retried
      error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
      if attempt < len(RETRY_DELAYS_S):
        log.warning("%s: download failed (%s); retrying in %ss", ckpt.path, error,
                    RETRY_DELAYS_S[attempt])
        time.sleep(RETRY_DELAYS_S[attempt])
  if not cached:  # the shards that did arrive would only fill the disk
    try:
      client.delete(ckpt.repo, ckpt.revision)
    except Exception:  # pylint: disable=broad-except
      pass
  return Fetched(ckpt, None, False,
                 {"download": f"{ckpt.path}: download failed "
                              f"{len(RETRY_DELAYS_S) + 1} times; last: {error}"})


def _weight_patterns(snapshot: str) -> list[list[str]]:
  """One format's weight files: the index says which; unindexed, safetensors first."""
  if os.path.isfile(os.path.join(snapshot, "model.safetensors.index.json")):
    return [["*.safetensors"]]
  if os.path.isfile(os.path.join(snapshot, "pytorch_model.bin.index.json")):
    return [["pytorch_model*.bin"]]
  return [["model.safetensors"], ["pytorch_model.bin"]]


def _has_weights(snapshot: str) -> bool:
  return any(n.endswith((".safetensors", ".bin")) for n in os.listdir(snapshot))


def evaluate(checkpoints: list[HubCheckpoint], output: str,
             score: Callable[[str, HubCheckpoint], dict], *, client: Client,
             keep: bool = False, progress: bool = True) -> int:
  """Scores the checkpoints not yet in `output` with `score(snapshot_dir, ckpt) -> record`,
  downloading the next while one is scored; returns how many records were written now."""
  import tqdm  # pylint: disable=import-outside-toplevel
  todo = series_lib.pending(checkpoints, output)
  if not todo:
    return 0
  written = 0
  pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hub-download")
  try:
    upcoming = pool.submit(fetch, client, todo[0])
    for i in tqdm.trange(len(todo), desc="checkpoints", unit="ckpt", disable=not progress):
      got = upcoming.result()
      upcoming = pool.submit(fetch, client, todo[i + 1]) if i + 1 < len(todo) else None
      try:
        record = _error_record(got) if got.error else _scored(score, got)
        series_lib.append_record(output, record)
        written += 1
      finally:
        if got.downloaded and not keep:
          client.delete(got.ckpt.repo, got.ckpt.revision)
  finally:  # interrupted: the download in flight finishes and stays in the cache
    pool.shutdown(wait=False, cancel_futures=True)
  return written


def _scored(score, got: Fetched) -> dict:
  try:
    record = score(got.snapshot, got.ckpt)
  except (ValueError, FileNotFoundError) as e:  # a checkpoint fineline cannot read
    got.error = {"checkpoint": str(e)}
    return _error_record(got)
  return {**record, "checkpoint": got.ckpt.path, "repo": got.ckpt.repo,
          "revision": got.ckpt.revision}


def _error_record(got: Fetched) -> dict:
  log.error("%s: %s", got.ckpt.path, next(iter(got.error.values())))
  c = got.ckpt
  return {"checkpoint": c.path, "model": c.repo, "repo": c.repo, "revision": c.revision,
          "step": c.step, "tokens": c.tokens, "tasks": {}, "errors": got.error}


def evaluate_with(evaluate_one, checkpoints: list[HubCheckpoint], args, client: Client) -> int:
  """`fineline eval --hf_repo/--hf_repos`: `evaluate_one(Checkpoint, tokenizer=…)` scores
  each downloaded snapshot (see `command._Evaluate`)."""
  tokenizers = _Tokenizers(client, args.tokenizer)

  def score(snapshot: str, ckpt: HubCheckpoint) -> dict:
    record = evaluate_one(series_lib.Checkpoint(snapshot, ckpt.step, ckpt.tokens),
                          tokenizer=tokenizers.for_snapshot(snapshot, ckpt), name=ckpt.path)
    return {**record, "model": args.model or ckpt.repo}

  return evaluate(checkpoints, args.output, score, client=client, keep=args.keep,
                  progress=not args.quiet)


class _Tokenizers:
  """--tokenizer (a path or a Hub repository), else the snapshot's own tokenizer files,
  else those of the repository's default revision (Amber's ckpt_NNN branches have none)."""

  def __init__(self, client: Client, explicit: str | None):
    self.client, self.explicit, self.by_repo = client, explicit, {}
    if explicit and not os.path.exists(os.path.expanduser(explicit)):
      if not re.fullmatch(r"[\w.-]+/[\w.-]+", explicit):
        raise FileNotFoundError(f"--tokenizer {explicit}: no such file, directory or Hub "
                                "repository name")
      self.explicit = self._fetch(explicit)
      if not self.explicit:
        raise FileNotFoundError(f"--tokenizer {explicit}: the repository has no tokenizer "
                                "files (tokenizer.model, tokenizer.json)")

  def _fetch(self, repo: str) -> str | None:
    try:
      snapshot = self.client.download(repo, None, SMALL_FILES[3:])
    except Exception as e:  # pylint: disable=broad-except
      log.warning("%s: could not fetch its tokenizer (%s)", repo, e)
      return None
    return snapshot if _has_tokenizer(snapshot) else None

  def for_snapshot(self, snapshot: str, ckpt: HubCheckpoint) -> str:
    if self.explicit:
      return self.explicit
    if _has_tokenizer(snapshot):
      return snapshot
    if ckpt.repo not in self.by_repo:
      self.by_repo[ckpt.repo] = self._fetch(ckpt.repo)
    if not self.by_repo[ckpt.repo]:
      raise FileNotFoundError(f"{ckpt.path}: no tokenizer in the revision or in the "
                              "repository's default revision; pass --tokenizer (a path or a "
                              "Hub repository)")
    return self.by_repo[ckpt.repo]


def _has_tokenizer(directory: str) -> bool:
  return any(os.path.isfile(os.path.join(directory, f))
             for f in ("tokenizer.model", "tokenizer.json"))
