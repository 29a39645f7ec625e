"""Probe 6: from probe 5's model, general multiple choice in the AdaMLLM benchmark layout ("Question: ...\nThe
choices are:\n(A) ...") answered with the option's text, mixed with probe 5's data kinds.
Args: INIT_MODEL N_GENERAL N_INFORMATIVE N_WEB EPOCHS LR OUT."""
import random
import sys
from pathlib import Path

from _mix import conversation, informative_rows, train_on, web_rows
from pipelines.experiments.miniworld import data, worlds

init, n_gen, n_inf, n_web, epochs, lr, out = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                              float(sys.argv[5]), float(sys.argv[6]), Path(sys.argv[7]))
rng = random.Random(8)


def choice_text(q, opts):
    return "Question: " + q + "\nThe choices are:\n" + "\n".join(f"({'ABCD'[i]}) {o}" for i, o in enumerate(opts))


rows = []
for i in range(n_gen):
    attrs, img, cap = worlds.make_general(i, seed=18)
    tasks = rng.sample(worlds.general_tasks(attrs, rng), 2)
    q, opts, truth = rng.choice(worlds.general_choice_tasks(attrs, rng))
    turns = [(data.CAPTION_PROMPT, cap), *[(worlds.short_prompt(t["instruction"]), t["precise"]) for t in tasks],
             (choice_text(q, opts), truth)]
    rows.append(conversation(i, img, turns, rng, "g"))
rows += informative_rows(n_inf, rng) + web_rows(n_web, 41, rng)
train_on(rows, init, epochs, lr, out)
