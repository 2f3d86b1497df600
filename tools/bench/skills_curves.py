"""Trains the `demo` preset on the generated skills corpus and scores the held-out skill
tasks every few steps, to check that the skills' curves differ (early/late/never).

A minimal loop (optax AdamW + jax.jit), independent of the trainer: documents are tokenised
with the corpus's SentencePiece model, EOS-terminated, shuffled per epoch and packed;
evaluation prepends BOS as Hugging Face's LLaMA tokenizer does. Multiple choice is scored
as lm-eval's acc (summed log-likelihood of " " + choice); generation items as greedy exact
match, i.e. whether every token of " " + answer + "\\n" is the argmax (what greedy decoding
until "\\n" would produce).

  JAX_PLATFORMS=cpu python tools/bench/skills_curves.py --steps 480 --every 48

Prints one JSON line per evaluation ({"step", "tokens", "loss", task: [mc_acc, gen_em]})
and a table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import sentencepiece as spm

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from fineline.data import skills  # pylint: disable=wrong-import-position
from fineline.models.llama import Llama, init_params  # pylint: disable=wrong-import-position
from fineline.models.presets import get_preset  # pylint: disable=wrong-import-position
from fineline.training.loss import next_token_loss  # pylint: disable=wrong-import-position

BOS, EOS = 1, 2


def packed_batches(documents_ids, batch, length, seed):
  """Endless (B, length + 1) windows over the EOS-joined documents, reshuffled per epoch."""
  stream, epoch = [], 0
  order = list(range(len(documents_ids)))
  while True:
    while len(stream) < batch * (length + 1):
      random.Random(seed + epoch).shuffle(order)
      epoch += 1
      for i in order:
        stream.extend(documents_ids[i] + [EOS])
    chunk, stream = stream[:batch * (length + 1)], stream[batch * (length + 1):]
    yield np.asarray(chunk, np.int32).reshape(batch, length + 1)


def scoring_requests(corpus, sp):
  """(task, form, item, choice, token ids, number of scored tail tokens) per request."""
  requests = []
  for name, spec in sorted(corpus.tasks.items()):
    skill = name[len(skills.TASK_PREFIX):].rsplit("_", 1)[0]
    for i, item in enumerate(skills.read_items(spec["path"])):
      context = [BOS] + sp.encode(item["context"])
      if spec["kind"] == "multiple_choice":
        for j, choice in enumerate(item["choices"]):
          full = [BOS] + sp.encode(f"{item['context']} {choice}")
          requests.append((skill, "mc", i, j, full, len(full) - len(context), item["gold"]))
      else:
        full = [BOS] + sp.encode(f"{item['context']} {item['answer']}\n")
        requests.append((skill, "gen", i, 0, full, len(full) - len(context), None))
  return requests


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=480)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--length", type=int, default=128)
  parser.add_argument("--every", type=int, default=48)
  parser.add_argument("--lr", type=float, default=2e-3)
  parser.add_argument("--warmup", type=int, default=20)
  parser.add_argument("--data_dir", default=None, help="corpus directory (default: a temp dir)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  data_dir = args.data_dir or os.path.join(tempfile.mkdtemp(), "skills")
  corpus = skills.ensure_corpus(data_dir, seed=args.seed)
  sp = spm.SentencePieceProcessor(model_file=os.path.join(corpus.tokenizer_dir, "tokenizer.model"))
  docs = [json.loads(line)["text"] for path in corpus.train_files for line in open(path)]
  docs_ids = sp.encode(docs)
  print(f"# corpus: {len(docs)} documents, {sum(map(len, docs_ids))} tokens", flush=True)

  cfg = get_preset("demo")
  model = Llama(cfg)
  params = init_params(cfg, jax.random.key(args.seed))
  schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, args.warmup, args.steps,
                                                args.lr * 0.1)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=0.1))
  opt_state = optimizer.init(params)

  @jax.jit
  def train_step(params, opt_state, tokens_BxS1):
    batch = {"inputs": tokens_BxS1[:, :-1], "targets": tokens_BxS1[:, 1:],
             "weights": jnp.ones(tokens_BxS1[:, 1:].shape, jnp.float32)}
    (loss, _), grads = jax.value_and_grad(next_token_loss, has_aux=True)(params, batch,
                                                                         model=model)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  requests = scoring_requests(corpus, sp)
  width = max(len(r[4]) for r in requests)
  tokens_NxL = np.zeros((len(requests), width), np.int32)
  scored_NxL = np.zeros((len(requests), width), np.float32)
  for n, r in enumerate(requests):
    tokens_NxL[n, :len(r[4])] = r[4]
    scored_NxL[n, len(r[4]) - r[5]:len(r[4])] = 1

  @jax.jit
  def score(params, tokens_BxL, scored_BxL):
    logprobs = jax.nn.log_softmax(model.apply({"params": params}, tokens_BxL[:, :-1]), -1)
    targets, mask = tokens_BxL[:, 1:], scored_BxL[:, 1:]
    token_ll = jnp.take_along_axis(logprobs, targets[..., None], -1)[..., 0]
    greedy = (jnp.argmax(logprobs, -1) == targets) | (mask == 0)
    return jnp.sum(token_ll * mask, -1), jnp.all(greedy, -1)

  def evaluate(params):
    lls, greedy = [], []
    for k in range(0, len(requests), 256):
      ll, g = score(params, tokens_NxL[k:k + 256], scored_NxL[k:k + 256])
      lls.append(np.asarray(ll))
      greedy.append(np.asarray(g))
    lls, greedy = np.concatenate(lls), np.concatenate(greedy)
    choice_ll, gen_hits, golds = {}, {}, {}
    for n, (skill, form, i, j, _, _, gold) in enumerate(requests):
      if form == "mc":
        choice_ll.setdefault((skill, i), {})[j] = lls[n]
        golds[(skill, i)] = gold
      else:
        gen_hits.setdefault(skill, []).append(bool(greedy[n]))
    mc = {}
    for (skill, i), by_choice in choice_ll.items():
      mc.setdefault(skill, []).append(max(by_choice, key=by_choice.get) == golds[(skill, i)])
    return {s: [round(float(np.mean(mc[s])), 3), round(float(np.mean(gen_hits[s])), 3)]
            for s in sorted(mc)}

  batches = packed_batches(docs_ids, args.batch, args.length, args.seed)
  rows, losses, train_s = [], [], 0.0
  for step in range(1, args.steps + 1):
    start = time.time()
    params, opt_state, loss = train_step(params, opt_state, next(batches))
    losses.append(float(loss))  # blocks until the step is done
    train_s += time.time() - start
    if step % args.every == 0 or step == args.steps:
      start = time.time()
      scores = evaluate(params)
      row = {"step": step, "tokens": step * args.batch * args.length,
             "loss": round(float(np.mean(losses[-args.every:])), 3),
             "train_s": round(train_s, 1), "eval_s": round(time.time() - start, 1), **scores}
      rows.append(row)
      print(json.dumps(row), flush=True)
  skills_names = [k for k in rows[0] if isinstance(rows[0][k], list)]
  print("\nstep  " + "  ".join(f"{s[:14]:>14}" for s in skills_names) + "   (mc acc / gen em)")
  for row in rows:
    print(f"{row['step']:>4}  " + "  ".join(f"{row[s][0]:>7.2f}/{row[s][1]:<6.2f}"
                                         for s in skills_names))


if __name__ == "__main__":
  main()
