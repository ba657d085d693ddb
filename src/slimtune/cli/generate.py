"""`slimtune generate`: answer prompts with a causal-LM adapter (or a base model), streaming to the terminal."""

import json

HELP = """Generate answers with a causal-LM adapter. Prompts come from arguments, --file (one per
line) or standard input; each is sent as a user message through the model's chat template.
Greedy decoding by default (deterministic); --sample draws with --temperature, --top-p, --top-k.

examples:
  slimtune generate --adapter runs/sst2-lora "Is this review positive or negative? A gripping film."
  slimtune generate --model smollm2-135m "Write a haiku about autumn." --sample --temperature 0.7 --seed 1
"""


def register(sub) -> None:
    import argparse

    from slimtune.cli.common import add_model_int8_flags, add_threads_flag

    p = sub.add_parser("generate", help="generate text with a causal-LM adapter", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", metavar="DIR", help="causal-lm run directory written by `slimtune train`")
    p.add_argument("prompts", nargs="*", metavar="PROMPT")
    p.add_argument("--file", metavar="PATH", help="read prompts from a file, one per line")
    p.add_argument("--model", metavar="ID|PATH", help="base model (default: the adapter's; without --adapter: "
                                                       "generate with this model as it is)")
    add_model_int8_flags(p)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0, help="with --sample")
    p.add_argument("--top-p", type=float, default=1.0, help="with --sample: nucleus probability mass")
    p.add_argument("--top-k", type=int, default=0, help="with --sample: keep the k likeliest tokens (0: all)")
    p.add_argument("--seed", type=int, help="seed for --sample, for reproducible draws")
    p.add_argument("--no-stream", action="store_true", help="print each answer when complete")
    p.add_argument("--json", action="store_true", help="print one JSON object per prompt (implies --no-stream)")
    add_threads_flag(p)
    p.set_defaults(handler=run, task="causal-lm")


def run(args) -> int:
    from slimtune.cli.common import load_model_or_adapter, read_inputs
    from slimtune.errors import SlimtuneError
    from slimtune.tasks.generation import GenerationOptions, generate_texts

    options = GenerationOptions(max_new_tokens=args.max_new_tokens, sample=args.sample,
                                temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed)
    options.validate()
    prompts = read_inputs(args.prompts, args.file)
    if args.adapter:
        args.task = None  # recorded in the adapter
    loaded = load_model_or_adapter(args)
    if loaded.task.name != "causal-lm":
        raise SlimtuneError(f"{args.adapter} is a {loaded.task.name} adapter; generate needs a causal-lm one "
                            "(use `slimtune predict`)")
    if args.no_stream or args.json:
        for prompt, answer in zip(prompts, generate_texts(loaded.model, prompts, options)):
            print(json.dumps({"prompt": prompt, "response": answer}) if args.json else f"> {prompt}\n{answer}")
        return 0
    for prompt in prompts:
        print(f"> {prompt}", flush=True)
        generate_texts(loaded.model, [prompt], options, on_text=lambda text: print(text, end="", flush=True))
        print(flush=True)
    return 0
