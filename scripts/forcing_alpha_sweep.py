"""Language forcing on Gemma-3-270M: English "Q: … A:" prompts, deactivate en and add a target.

Prints the share of answers a language identifier assigns to the target, for several α.
Usage: python scripts/forcing_alpha_sweep.py [--set NAME] [--targets zh,de,fr] [--alphas 0.5,1,2,4]
"""

from __future__ import annotations

import argparse

from lape_eval.calibrate import generate_answers
from lape_eval.lid import identify_languages
from lape_eval.models import load_model
from lape_eval.neuron_set import resolve_neuron_set
from lape_eval.steering import steer

PROMPTS = ["How are you today?", "What is your name?", "What year is it?", "What is your favorite color?",
           "What is the weather like?", "Where are you from?"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", default="gemma-3-270m-udhr-1pct")
    parser.add_argument("--targets", default="zh,de,fr")
    parser.add_argument("--alphas", default="0.5,1,2,4")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    loaded = load_model("gemma-3-270m-gguf")
    ns = resolve_neuron_set(args.set)
    base = generate_answers(loaded.model, loaded.tokenizer, PROMPTS, max_new_tokens=args.max_new_tokens)
    print("unsteered:", identify_languages(base))
    for target in args.targets.split(","):
        for alpha in map(float, args.alphas.split(",")):
            with steer(loaded.model, ns, f"-en +{target}", alpha=alpha):
                answers = generate_answers(loaded.model, loaded.tokenizer, PROMPTS, max_new_tokens=args.max_new_tokens)
            labels = identify_languages(answers)
            rate = sum(label == target for label in labels) / len(labels)
            print(f"-en +{target} alpha={alpha:g}: {rate:.0%}  {labels}  e.g. {answers[0][:60]!r}")


if __name__ == "__main__":
    main()
