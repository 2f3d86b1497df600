"""The downstream benchmark suite, registered with seqio by task name.

Importing a task module registers its tasks: `evals.multiple_choice` (hellaswag, arc_easy,
arc_challenge, piqa, winogrande, boolq, openbookqa, sciq, mmlu), `evals.generation`
(lambada, gsm8k, triviaqa), `evals.code` (humaneval, mbpp: programs run in
`fineline.evaluation.sandbox`), `evals.perplexity` (heldout_ppl), `evals.skills` (the demo
corpus's skills). `evals.registry` holds the API for adding tasks from simple item files.
fineline itself never imports this package; it looks tasks up by name.
"""
