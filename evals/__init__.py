"""The downstream benchmark suite, registered by task name (with seqio too, once loaded).

Importing a task module registers its tasks: `evals.multiple_choice` (hellaswag, arc_easy,
arc_challenge, piqa, winogrande, boolq, openbookqa, sciq, social_iqa, commonsense_qa, race,
truthfulqa_mc1, truthfulqa_mc2, mmlu, and through `evals.exams` ceval and cmmlu),
`evals.generation` (lambada, gsm8k, triviaqa, nq_open, and through `evals.minerva_math`
minerva_math), `evals.code` (humaneval, mbpp: programs run in
`fineline.evaluation.sandbox`), `evals.perplexity` (heldout_ppl), `evals.skills` (the demo
corpus's skills). `evals.registry` holds the API for adding tasks from simple item files.
fineline itself never imports this package; it looks tasks up by name.
"""
